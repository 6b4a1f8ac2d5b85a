"""torchrun for the Amazon training stages: two gloo processes (each training on its shard of the global
batch, the loss weighted by each rank's share of the batch's positions, evaluation sharded by user and
gathered) end with the same weights and metrics as one process on the same global batch."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from pipeline.seqrec import run as rn
from pipeline.seqrec.run import make_model, train_and_evaluate
from tests.conftest import spawn_gloo
from tests.test_seqrec_train import cfg, dataset

pytestmark = pytest.mark.slow

GLOBAL_BATCH = 16


def _whole_batches(pack):
    """Training rows cut to a multiple of the global batch (no rank pads its shard with a repeated row)."""
    def wrapped(*args, **kw):
        data = pack(*args, **kw)
        keep = torch.zeros(len(data), dtype=torch.bool)
        keep[: len(data) // GLOBAL_BATCH * GLOBAL_BATCH] = True
        return data.select(keep.numpy())
    return wrapped


def _run(loss: str, ckpt):
    c = dataclasses.replace(cfg(loss), dropout=0.0, batch_size=GLOBAL_BATCH, epochs=3)
    ds = dataset()
    torch.manual_seed(5)
    model = make_model(c, ds, None, 0)
    pack = rn.pack_sequences
    rn.pack_sequences = _whole_batches(pack)
    try:
        return model, train_and_evaluate(c, ds, model, checkpoint_dir=ckpt, tb_dir=None, oracle=None)
    finally:
        rn.pack_sequences = pack


def _worker(rank: int, loss: str, ckpt: str, out: str) -> None:
    model, res = _run(loss, ckpt)
    if rank == 0:
        torch.save({"state": model.state_dict(), "metrics": res["metrics"], "steps": res["steps"],
                    "history": res["history"]}, out)


@pytest.mark.parametrize("loss", ["sampled", "ce"])
def test_two_gloo_ranks_match_one_process(tmp_path, loss):
    torch.set_num_threads(1)
    model, ref = _run(loss, tmp_path / "single")
    out = tmp_path / "ddp.pt"
    spawn_gloo(_worker, 2, loss, str(tmp_path / "ddp"), str(out))
    got = torch.load(out, weights_only=True)
    assert got["steps"] == ref["steps"]
    # the logged training loss is the mean over both ranks' rows (not rank 0's own): the one-process figure
    assert [h["train_loss"] for h in got["history"]] == pytest.approx([h["train_loss"] for h in ref["history"]],
                                                                      rel=1e-4)
    for k, v in model.state_dict().items():
        # atol 1e-4: the attention's key bias has a gradient of pure float noise (softmax is invariant to it),
        # which Adam's normalisation turns into lr-sized steps (1.3e-5 apart after 3 epochs; all else < 1e-7)
        torch.testing.assert_close(got["state"][k], v, rtol=1e-4, atol=1e-4, msg=k)
    for split, m in ref["metrics"].items():                   # every user ranked once, gathered in order
        for key, v in m.items():
            assert got["metrics"][split][key] == pytest.approx(v, abs=1e-4), (split, key)
