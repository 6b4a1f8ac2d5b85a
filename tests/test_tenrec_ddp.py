"""torchrun for the Tenrec training stages: two gloo processes (each training on its shard of the global
batch, evaluation sharded by user and gathered) end with the same weights and the same validation history
as one process on the same global batch, for the two-tower retriever and the Fastformer ranker."""

from __future__ import annotations

import dataclasses
import os
import socket

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from pipeline.core.dist import gather_rows, shard_range
from pipeline.core.params import load_all
from pipeline.tenrec import ranking as rk
from pipeline.tenrec import retrieval as rt
from pipeline.tenrec.formats import oracle_name
from pipeline.tenrec.params import CHECKS, SECTIONS
from pipeline.tenrec.prepare import load_sequences, prepare, split_users
from pipeline.tenrec.synthetic import generate
from tests.conftest import ROOT

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    d = tmp_path_factory.mktemp("tenrec_ddp")
    generate(d / "raw", users=160, items=400, rows=6_000, categories=8, rank=4, mean_ctr=0.25, like_rate=0.1,
             missing_category=0.05, signal=1.5, seed=5)
    (d / "prep").mkdir()
    prepare(d / "raw" / "QB-video.csv", d / "prep", batch_rows=1000, history_len=10, min_clicks=3,
            oracle_path=d / "raw" / oracle_name("QB-video"))
    return d


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


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(rank: int, world: int, port: int, kind: str, prep: str, ckpt: str, out: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    torch.set_num_threads(1)
    try:
        fit = _fit(kind, prep, ckpt)
        if rank == 0:
            torch.save({"state": fit.model.state_dict(), "history": fit.state.history}, out)
    finally:
        dist.destroy_process_group()


@pytest.mark.parametrize("kind", ["retrieval", "ranking"])
def test_two_gloo_ranks_match_one_process(world, tmp_path, kind):
    torch.set_num_threads(1)
    single = _fit(kind, world / "prep", tmp_path / "single")
    out = tmp_path / "ddp.pt"
    mp.spawn(_worker, args=(2, _free_port(), kind, str(world / "prep"), str(tmp_path / "ddp"), str(out)), nprocs=2,
             join=True)
    got = torch.load(out, weights_only=True)
    for k, v in single.model.state_dict().items():
        torch.testing.assert_close(got["state"][k], v, rtol=1e-4, atol=1e-5, msg=k)
    assert len(got["history"]) == len(single.state.history) >= 2
    for a, b in zip(got["history"], single.state.history):
        assert a["step"] == b["step"]                           # the same global steps per epoch
        for key, v in b.items():
            if key.startswith("valid_"):                        # evaluation sharded by user and gathered
                assert a[key] == pytest.approx(v, abs=1e-4), key


def test_shard_ranges_cover_every_row_once():
    for n in (0, 1, 7, 10):
        for world in (1, 2, 3):
            parts = [shard_range(n, r, world) for r in range(world)]
            assert parts[0][0] == 0 and parts[-1][1] == n
            assert all(a[1] == b[0] for a, b in zip(parts, parts[1:]))
    assert (gather_rows(np.arange(3)) == np.arange(3)).all()     # no process group: the array itself
