"""torchrun/DDP: two gloo processes train to the same weights as one process on the same global batch."""

import os
import socket

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from pipeline.core.train import Trainer
from tests.test_train_loop import make, tiny_data, trainer

pytestmark = pytest.mark.slow


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(rank: int, world: int, port: int, out: str, ckpt: str, rule: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    torch.set_num_threads(1)
    try:
        m, r = make(rule, seed=5)
        t = trainer(m, r, ckpt, epochs=2, batch_size=64, patience=5)
        t.fit(tiny_data(512, 0), tiny_data(200, 1))
        metrics = t.evaluate(tiny_data(200, 1))
        if rank == 0:
            torch.save({"state": m.state_dict(), "metrics": metrics}, out)
    finally:
        dist.destroy_process_group()


@pytest.mark.parametrize("rule", ["adam", "helen"])
def test_two_gloo_ranks_match_one_process(tmp_path, rule):
    m, r = make(rule, seed=5)
    single: Trainer = trainer(m, r, tmp_path / "single", epochs=2, batch_size=64, patience=5)
    single.fit(tiny_data(512, 0), tiny_data(200, 1))
    ref = single.evaluate(tiny_data(200, 1))

    out = tmp_path / "ddp.pt"
    mp.spawn(_worker, args=(2, _free_port(), str(out), str(tmp_path / "ddp"), rule), nprocs=2, join=True)
    got = torch.load(out, weights_only=True)
    for k, v in m.state_dict().items():
        torch.testing.assert_close(got["state"][k], v, rtol=1e-5, atol=1e-6, msg=k)
    assert got["metrics"]["auc"] == pytest.approx(ref["auc"], abs=1e-6)
