"""Tenrec training through the one loop on a tiny synthetic world: both models learn above chance, a killed
ranking run resumes to the same result, and the world's oracle beats chance."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from pipeline.core.errors import DataError
from pipeline.core.params import load_all
from pipeline.tenrec import ann
from pipeline.tenrec import ranking as rk
from pipeline.tenrec import retrieval as rt
from pipeline.tenrec.formats import oracle_name
from pipeline.tenrec.metrics import protocol_metrics
from pipeline.tenrec.params import CHECKS, SECTIONS
from pipeline.tenrec.prepare import load_sequences, prepare, split_users
from pipeline.tenrec.synthetic import World, generate
from tests.conftest import ROOT


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    d = tmp_path_factory.mktemp("tenrec_world")
    generate(d / "raw", users=200, items=500, rows=8_000, categories=8, rank=4, mean_ctr=0.25, like_rate=0.1,
             missing_category=0.05, signal=1.5, seed=5)
    (d / "prep").mkdir()
    stats = prepare(d / "raw" / "QB-video.csv", d / "prep", batch_rows=1000, history_len=10, min_clicks=3,
                    oracle_path=d / "raw" / oracle_name("QB-video"))
    return d, stats


@pytest.fixture(scope="module")
def params():
    p = load_all(ROOT / "params.yaml", SECTIONS, CHECKS)
    rp = dataclasses.replace(p.ranking, epochs=2, batch_size=256, eval_users=100, sampled_negatives=49,
                             checkpoint_every_steps=3, targets_per_user=2)
    tp = dataclasses.replace(p.retrieval, epochs=2, batch_size=256, eval_users=0, num_negatives=31)
    return tp, rp


def test_prepare_stats_and_oracle(world):
    d, stats = world
    assert stats["synthetic"] and stats["oracle_ctr_view_auc"] > 0.7
    assert stats["ctr_rows"] + stats["dropped_in_history"] == stats["rows"] > 7_500


def test_retrieval_trains_above_chance(world, params, tmp_path):
    d, _ = world
    s = load_sequences(d / "prep")
    split = split_users(s, 3)
    fit = rt.fit_retrieval(s, split, params[0], seed=1, checkpoint_dir=tmp_path / "ck", tb_dir=None)
    assert len(fit.state.history) >= 1 and "valid_recall@100" in fit.state.history[0]
    m, items, tq = rt.evaluate_test(fit, s, World.load(d / "raw" / "world.npz"), 512)
    assert set(m) == {f"{o}recall@{k}" for o in ("", "oracle_") for k in rt.EXACT_KS}
    assert items.shape == (s.n_items + 1, params[0].embedding_dim) and len(tq) == len(fit.test)
    assert m["recall@100"] > 1.5 * 100 / s.n_items                  # well above a random ranking
    assert m["oracle_recall@100"] > m["recall@100"] * 0.8
    report = rt.retrieval_report(fit, s, split, params[0], m, dataset="d", synthetic=True, wall_seconds=1.0)
    assert report["metrics"][f"valid ({len(fit.valid)} users)"]["recall@100"] == max(
        h["valid_recall@100"] for h in fit.state.history)


def test_ranking_resume_matches_uninterrupted_run(world, params, tmp_path):
    d, _ = world
    s = load_sequences(d / "prep")
    split = split_users(s, 3)
    rp = params[1]
    full = rk.fit_ranking(s, split, rp, seed=3, checkpoint_dir=tmp_path / "a", tb_dir=None)
    rk.fit_ranking(s, split, rp, seed=3, checkpoint_dir=tmp_path / "b", tb_dir=None, max_steps=3)   # "killed"
    resumed = rk.fit_ranking(s, split, rp, seed=3, checkpoint_dir=tmp_path / "b", tb_dir=None)
    assert [h["valid_ndcg@20"] for h in resumed.state.history] == pytest.approx(
        [h["valid_ndcg@20"] for h in full.state.history])
    for (k, a), b in zip(full.model.state_dict().items(), resumed.model.state_dict().values()):
        torch.testing.assert_close(a, b, msg=k)
    valid = full.valid
    m = rk.evaluate_candidates(full.model, valid, 20, 4096)
    assert m["auc"] > 0.6                                           # learned something on sampled_50
    oc, ol = rk.oracle_scores(World.load(d / "raw" / "world.npz"), s, valid)
    o = protocol_metrics(oc, ol, valid.positive, valid.liked, valid.valid, 20)
    assert o["auc"] > 0.7 and 0 < o["ndcg@20"] <= 1 and o["hr@1"] <= o["mrr"]
    torch.save(full.model.state_dict(), tmp_path / "model.pt")
    loaded = rk.load_ranker(s, rp, tmp_path / "model.pt")
    assert not loaded.training and rk.evaluate_candidates(loaded, valid, 20, 4096) == m


def test_out_of_step_embeddings_and_candidates_are_data_errors(world, tmp_path):
    d, _ = world
    s = load_sequences(d / "prep")
    split = split_users(s, 3)
    users = split.eval_users
    np.savez(tmp_path / "ok.npz", eval_users=users, items=np.zeros((3, 2)), test_queries=np.zeros((len(users), 2)),
             test=np.arange(len(users) * 4).reshape(-1, 4))
    np.savez(tmp_path / "stale.npz", eval_users=users[1:], items=np.zeros((3, 2)), test_queries=np.zeros((1, 2)),
             test=np.zeros((1, 4)))
    assert ann.load_embeddings(tmp_path / "ok.npz", split)[1].shape == (len(users), 2)
    assert rk.load_candidates(tmp_path / "ok.npz", split, 2).shape == (len(users), 2)
    with pytest.raises(DataError, match="stale.npz: out of step .*re-run tenrec_train_retrieval"):
        ann.load_embeddings(tmp_path / "stale.npz", split)
    with pytest.raises(DataError, match="stale.npz: out of step .*re-run tenrec_build_index"):
        rk.load_candidates(tmp_path / "stale.npz", split, 2)


def test_sampled_negatives_never_clicked_and_distinct(world):
    d, _ = world
    s = load_sequences(d / "prep")
    split = split_users(s, 3)
    cs = rk.sampled_candidates(s, split, "test", np.arange(len(split.eval_users)), 49, 10, seed=0)
    items = cs.items.numpy()
    for r, u in enumerate(cs.users[:50]):
        clicked = set(s.clicks[s.click_off[u]:s.click_off[u + 1]].tolist())
        assert items[r, 0] in clicked and not clicked & set(items[r, 1:].tolist())
        assert len(set(items[r].tolist())) == 50
    assert cs.protocol == "sampled_50" and cs.positive[:, 0].all()
