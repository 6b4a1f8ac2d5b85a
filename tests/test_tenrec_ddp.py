"""torchrun for the Tenrec training stages: two gloo processes (each training on its shard of the global
batch, evaluation sharded by user and gathered) end with the same weights and the same validation history
as one process on the same global batch (weights within 1 % of how far training moved them, the validation
history within 1e-4), for the two-tower retriever and the Fastformer ranker."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from pipeline.core.dist import gather_rows, shard_range
from pipeline.core.params import load_all
from pipeline.tenrec import ranking as rk
from pipeline.tenrec import retrieval as rt
from pipeline.tenrec.params import CHECKS, SECTIONS
from pipeline.tenrec.prepare import load_sequences, split_users
from tests.conftest import ROOT, spawn_gloo
from tests.test_tenrec_train import world  # noqa: F401  (the module-scoped tiny Tenrec world)

pytestmark = pytest.mark.slow


def _sections():
    p = load_all(ROOT / "params.yaml", SECTIONS, CHECKS)
    # dropout 0: a dropout mask drawn for a half batch is not the one drawn for the whole batch
    tp = dataclasses.replace(p.retrieval, epochs=2, batch_size=GLOBAL_BATCH, eval_users=0, num_negatives=31)
    rp = dataclasses.replace(p.ranking, epochs=2, batch_size=GLOBAL_BATCH, eval_users=60, sampled_negatives=19,
                             targets_per_user=2, dropout=0.0)
    return tp, rp


GLOBAL_BATCH = 128


def _whole_batches(build):
    """The training rows cut to a multiple of the global batch: every step of one process then has exactly
    the rows of the two ranks' steps together (no rank pads its shard with a repeated row)."""
    def wrapped(*args):
        data = build(*args)
        keep = np.zeros(len(data), bool)
        keep[: len(data) // GLOBAL_BATCH * GLOBAL_BATCH] = True
        return data.select(keep)
    return wrapped


def _fit(kind: str, prep, ckpt):
    s = load_sequences(prep)
    split = split_users(s, 3)
    tp, rp = _sections()
    mod = rt if kind == "retrieval" else rk
    build = mod.training_rows
    mod.training_rows = _whole_batches(build)
    try:
        if kind == "retrieval":
            return rt.fit_retrieval(s, split, tp, seed=3, checkpoint_dir=ckpt, tb_dir=None)
        return rk.fit_ranking(s, split, rp, seed=3, checkpoint_dir=ckpt, tb_dir=None)
    finally:
        mod.training_rows = build


def _init_state(kind: str, prep) -> dict:
    """The weights the fit starts from (the same seed, the same construction)."""
    from pipeline.core.seeding import seed_everything

    s = load_sequences(prep)
    tp, rp = _sections()
    seed_everything(3)
    if kind == "retrieval":
        model = rt.TwoTower(s.n_users, s.n_items, s.n_categories, tp.embedding_dim, tp.hidden_units,
                            torch.from_numpy(s.item_category))
    else:
        model = rk.build_ranker(s, rp)
    return {k: v.clone() for k, v in model.state_dict().items()}


def _worker(rank: int, kind: str, prep: str, ckpt: str, out: str) -> None:
    fit = _fit(kind, prep, ckpt)
    if rank == 0:
        torch.save({"state": fit.model.state_dict(), "history": fit.state.history}, out)


@pytest.mark.parametrize("kind", ["retrieval", "ranking"])
def test_two_gloo_ranks_match_one_process(world, tmp_path, kind):
    torch.set_num_threads(1)
    single = _fit(kind, world[0] / "prep", tmp_path / "single")
    out = tmp_path / "ddp.pt"
    spawn_gloo(_worker, 2, kind, str(world[0] / "prep"), str(tmp_path / "ddp"), str(out))
    got = torch.load(out, weights_only=True)
    init = _init_state(kind, world[0] / "prep")
    for k, v in single.model.state_dict().items():
        if not v.dtype.is_floating_point:
            assert torch.equal(got["state"][k], v), k
            continue
        # the same step up to float summation order; Adam turns a rounding-size difference of a near-zero
        # gradient into an lr-size step, so the weights are compared against how far training moved them
        moved = (v - init[k]).norm()
        assert (got["state"][k] - v).norm() <= 0.01 * moved + 1e-6, k
    assert len(got["history"]) == len(single.state.history) >= 2
    for a, b in zip(got["history"], single.state.history):
        assert a["step"] == b["step"]                           # the same global steps per epoch
        for key, v in b.items():
            if key.startswith("valid_"):                        # evaluation sharded by user and gathered
                assert a[key] == pytest.approx(v, abs=1e-4), key
        assert a["train_loss"] == pytest.approx(b["train_loss"], rel=1e-4)   # the mean over both ranks' rows


def test_shard_ranges_cover_every_row_once():
    for n in (0, 1, 7, 10):
        for world in (1, 2, 3):
            parts = [shard_range(n, r, world) for r in range(world)]
            assert parts[0][0] == 0 and parts[-1][1] == n
            assert all(a[1] == b[0] for a, b in zip(parts, parts[1:]))
    assert (gather_rows(np.arange(3)) == np.arange(3)).all()     # no process group: the array itself
