"""torchrun/DDP: two gloo processes train to the same weights as one process on the same global batch."""

import pytest
import torch

from pipeline.core.train import Trainer
from tests.conftest import spawn_gloo
from tests.test_train_loop import make, tiny_data, trainer

pytestmark = pytest.mark.slow


def _worker(rank: int, out: str, ckpt: str, rule: str) -> None:
    m, r = make(rule, seed=5)
    t = trainer(m, r, ckpt, epochs=2, batch_size=64, patience=5)
    t.fit(tiny_data(512, 0), tiny_data(200, 1))
    metrics = t.evaluate(tiny_data(200, 1))
    if rank == 0:
        torch.save({"state": m.state_dict(), "metrics": metrics, "history": t.state.history}, out)


@pytest.mark.parametrize("rule", ["adam", "helen"])
def test_two_gloo_ranks_match_one_process(tmp_path, rule):
    m, r = make(rule, seed=5)
    single: Trainer = trainer(m, r, tmp_path / "single", epochs=2, batch_size=64, patience=5)
    single.fit(tiny_data(512, 0), tiny_data(200, 1))
    ref = single.evaluate(tiny_data(200, 1))

    out = tmp_path / "ddp.pt"
    spawn_gloo(_worker, 2, str(out), str(tmp_path / "ddp"), rule)
    got = torch.load(out, weights_only=True)
    for k, v in m.state_dict().items():
        torch.testing.assert_close(got["state"][k], v, rtol=1e-5, atol=1e-6, msg=k)
    assert got["metrics"]["auc"] == pytest.approx(ref["auc"], abs=1e-6)
    # the logged training loss is the mean over both ranks' rows (rank 0's own half differs from it)
    losses = [h["train_loss"] for h in got["history"]]
    assert losses == pytest.approx([h["train_loss"] for h in single.state.history], rel=1e-5)
