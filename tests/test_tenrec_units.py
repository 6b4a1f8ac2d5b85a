"""Tenrec branch unit tests: Fastformer, gen_ctr semantics, sampled softmax, FAISS, metrics, bad input."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from sklearn.metrics import roc_auc_score

from pipeline.core.errors import ConfigError, DataError
from pipeline.tenrec import ann
from pipeline.tenrec.fastformer import Encoder, FastformerAttention, FastformerLayer
from pipeline.tenrec.formats import COLUMNS, UserChunker, iter_log
from pipeline.tenrec.metrics import beside_oracle, pooled_auc, protocol_metrics
from pipeline.tenrec.prepare import gen_ctr_chunk, load_sequences, prepare, split_users
from pipeline.tenrec.retrieval import EXACT_KS, NegativeSampler, QuerySet, RetrievalTask, catalogue_ranks, \
    sampled_softmax_logits

HEADER = ",".join(COLUMNS)


# ------------------------------------------------------------------------------------------ Fastformer
def naive_fastformer(att: FastformerAttention, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """The paper's equations, one sequence and one head at a time, with plain loops over positions."""
    out = torch.zeros_like(x)
    d, h, dh = att.dim, att.heads, att.dh
    for b in range(x.shape[0]):
        real = [i for i in range(x.shape[1]) if mask[b, i]]
        q = att.w_q(x[b])
        k = att.w_k(x[b])
        v = att.w_v(x[b])
        u = torch.zeros(x.shape[1], d)
        for head in range(h):
            sl = slice(head * dh, (head + 1) * dh)
            a = torch.stack([q[i, sl] @ att.q_att[head] / math.sqrt(dh) for i in real])
            a = torch.exp(a - a.max())
            a = a / a.sum()
            gq = sum(a[j] * q[i, sl] for j, i in enumerate(real))
            p = {i: gq * k[i, sl] for i in real}
            bsc = torch.stack([p[i] @ att.k_att[head] / math.sqrt(dh) for i in real])
            bsc = torch.exp(bsc - bsc.max())
            bsc = bsc / bsc.sum()
            gk = sum(bsc[j] * p[i] for j, i in enumerate(real))
            for i in real:
                u[i, sl] = gk * v[i, sl]
        r = att.w_o(u) + q
        for i in real:
            out[b, i] = r[i]
    return out


def test_fastformer_equals_naive_per_head_reference():
    torch.manual_seed(0)
    att = FastformerAttention(12, 3)
    with torch.no_grad():                       # non-trivial scoring vectors
        att.q_att.normal_(0, 1.0)
        att.k_att.normal_(0, 1.0)
    x = torch.randn(3, 7, 12)
    mask = torch.ones(3, 7, dtype=torch.bool)
    mask[1, 5:] = False
    mask[2, 2:] = False
    fast = att(x, mask)
    ref = naive_fastformer(att, x, mask)
    torch.testing.assert_close(fast * mask[..., None], ref, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("kind", ["fastformer", "transformer"])
def test_padding_does_not_change_unpadded_outputs(kind):
    torch.manual_seed(1)
    enc = Encoder(kind, 16, 2, 32, 2, dropout=0.0).eval()
    x = torch.randn(2, 5, 16)
    mask = torch.ones(2, 5, dtype=torch.bool)
    padded = torch.cat([x, torch.randn(2, 4, 16) * 100], 1)      # garbage in the padding slots
    pmask = torch.cat([mask, torch.zeros(2, 4, dtype=torch.bool)], 1)
    with torch.no_grad():
        a = enc(x, mask)
        b = enc(padded, pmask)[:, :5]
    torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)


def test_fastformer_layer_is_post_ln_and_checkpointing_matches():
    torch.manual_seed(2)
    layer = FastformerLayer(8, 2, 16, 0.0)
    out = layer(torch.randn(4, 6, 8), torch.ones(4, 6, dtype=torch.bool))
    torch.testing.assert_close(out.mean(-1), torch.zeros(4, 6), atol=1e-5, rtol=0)   # ends in a LayerNorm
    enc = Encoder("fastformer", 8, 2, 16, 3, 0.0)
    enc_ck = Encoder("fastformer", 8, 2, 16, 3, 0.0, gradient_checkpointing=True)
    enc_ck.load_state_dict(enc.state_dict())
    x = torch.randn(2, 5, 8, requires_grad=True)
    m = torch.ones(2, 5, dtype=torch.bool)
    g1 = torch.autograd.grad(enc(x, m).square().sum(), x)[0]
    g2 = torch.autograd.grad(enc_ck(x, m).square().sum(), x)[0]
    torch.testing.assert_close(g1, g2)


# ---------------------------------------------------------------------------------------------- gen_ctr
def write_log(path, rows, header=HEADER):
    path.write_text(header + "\n" + "\n".join(",".join(map(str, r)) for r in rows) + "\n")
    return path


def row(u, i, click, like=0, cat=1, gender=1, age=3):
    return (u, i, click, 0, like, 0, cat, 5 if click else 0, gender, age)


def test_gen_ctr_semantics_on_a_hand_built_log(tmp_path):
    # user 7: 12 clicks interleaved with exposures -> history = first 10 clicks, 2 clicks remain
    u7 = []
    for k in range(12):
        u7.append(row(7, 100 + k, 1))
        u7.append(row(7, 500 + k, 0))
    u7.append(row(7, 101, 0))                       # an exposure of a history item: dropped as well
    # user 3: 3 clicks -> history = first 2 (all but the last)
    u3 = [row(3, 200, 0), row(3, 201, 1), row(3, 202, 1, like=1), row(3, 203, 0), row(3, 204, 1)]
    # user 9: no clicks -> empty history, all rows kept
    u9 = [row(9, 300, 0), row(9, 301, 0, cat="\\N")]
    path = write_log(tmp_path / "QB-video.csv", u7 + u3 + u9)
    out = tmp_path / "out"
    out.mkdir()
    stats = prepare(path, out, batch_rows=7, history_len=10, min_clicks=3)    # tiny batches: users span them
    import pyarrow.parquet as pq
    ctr = pq.read_table(out / "ctr.parquet").to_pandas()
    items = pq.read_table(out / "items.parquet").to_pandas()
    raw = dict(zip(items["item"], items["item_id"]))
    raw[0] = 0
    assert "watching_times" not in ctr.columns
    hist_cols = [f"hist_{j}" for j in range(1, 11)]
    by_user = {u: g for u, g in ctr.groupby("user")}
    g7, g3, g9 = by_user[0], by_user[1], by_user[2]            # user codes in order of appearance
    assert [raw[v] for v in g7.iloc[0][hist_cols]] == list(range(100, 110))
    assert sorted(raw[i] for i in g7["item"]) == sorted([110, 111] + list(range(500, 512)))
    assert g7["click"].sum() == 2 and len(g7) == 14              # 101 (clicked and re-shown) dropped twice
    assert [raw[v] for v in g3.iloc[0][hist_cols]] == [201, 202] + [0] * 8
    assert [raw[i] for i in g3["item"]] == [200, 203, 204] and g3["click"].tolist() == [0, 0, 1]
    assert (g9[hist_cols].to_numpy() == 0).all() and len(g9) == 2
    assert stats["ctr_rows"] == 14 + 3 + 2 and stats["users"] == 3
    # the sequence view and leave-last-out
    s = load_sequences(out)
    sp = split_users(s, 3)
    assert list(sp.eval_users) == [0, 1]                        # user 9 (no clicks) is train-only
    assert raw[int(sp.test_item[1])] == 204 and raw[int(sp.valid_item[1])] == 202 and sp.valid_like[1] == 1
    assert sp.n_train.tolist() == [10, 1, 0]
    assert s.item_category[list(items["item_id"]).index(301) + 1] == 0   # `\N` -> category 0


def test_gen_ctr_chunk_vectorised_history_rule():
    user = np.array([0, 0, 0, 1, 1])
    item = np.array([5, 6, 5, 7, 8])
    click = np.array([1, 0, 1, 1, 0])
    keep, hist, *_ = gen_ctr_chunk(user, item, click, 3)
    assert hist[0].tolist() == [5, 0, 0]                        # 2 clicks -> all but the last
    assert keep.tolist() == [False, True, False, True, True]    # item 5 is history: both rows dropped
    assert hist[1].tolist() == [0, 0, 0]


# ------------------------------------------------------------------------------------ sampled softmax
def test_logq_correction_and_accidental_hit_masking():
    torch.manual_seed(0)
    u = torch.nn.functional.normalize(torch.randn(3, 4), dim=-1)
    pos = torch.nn.functional.normalize(torch.randn(3, 4), dim=-1)
    neg = torch.nn.functional.normalize(torch.randn(5, 4), dim=-1)
    target = torch.tensor([2, 4, 9])
    neg_ids = torch.tensor([1, 4, 4, 7, 2])
    log_q = torch.log(torch.linspace(0.01, 0.2, 10))
    raw = sampled_softmax_logits(u, pos, neg, target, neg_ids, temperature=0.5, log_q=None,
                                 mask_accidental_hits=False)
    cor = sampled_softmax_logits(u, pos, neg, target, neg_ids, temperature=0.5, log_q=log_q,
                                 mask_accidental_hits=True)
    torch.testing.assert_close(raw[:, 0], (u * pos).sum(-1) / 0.5)
    torch.testing.assert_close(cor[:, 0], raw[:, 0] - log_q[target])
    hits = neg_ids[None, :] == target[:, None]
    assert torch.isinf(cor[:, 1:][hits]).all() and (cor[:, 1:][hits] < 0).all()
    assert hits.sum() == 3                                       # row 0: id 2; row 1: id 4 twice
    torch.testing.assert_close(cor[:, 1:][~hits], (raw[:, 1:] - log_q[neg_ids][None, :])[~hits])


def test_logq_corrected_negatives_estimate_the_full_partition_function():
    """With a skewed proposal, the logQ-corrected negative logits give an unbiased (importance-weighted)
    estimate of the full softmax's partition function; uncorrected, popular high-scoring items are over-counted."""
    g = torch.Generator().manual_seed(0)
    n, d = 400, 8
    counts = np.r_[0, (np.arange(n, 0, -1) ** 1.5)]
    sampler = NegativeSampler(n, counts, "popularity", 1.0)
    e = torch.zeros(d)
    e[0] = 1.0                                   # popular items lie towards the users' common direction
    pop = torch.from_numpy(counts / counts.max()).float().sqrt()
    items = torch.nn.functional.normalize(torch.randn(n + 1, d, generator=g) + 3 * pop[:, None] * e, dim=-1)
    items[0] = 0
    users0 = torch.nn.functional.normalize(torch.randn(64, d, generator=g) + 1.5 * e, dim=-1)
    target = torch.randint(1, n + 1, (64,), generator=g)

    tau, k, draws = 0.5, 127, 300
    z_full = torch.exp(users0 @ items[1:].T / tau).sum(1)                  # the full softmax's partition
    torch.manual_seed(1)
    z_corr = torch.zeros(64)
    z_raw = torch.zeros(64)
    for _ in range(draws):
        neg_ids = sampler.sample(k)
        lg = sampled_softmax_logits(users0, items[target], items[neg_ids], target, neg_ids, temperature=tau,
                                    log_q=sampler.log_q, mask_accidental_hits=False)[:, 1:]
        raw = sampled_softmax_logits(users0, items[target], items[neg_ids], target, neg_ids, temperature=tau,
                                     log_q=None, mask_accidental_hits=False)[:, 1:]
        z_corr += torch.exp(lg).sum(1) / k / draws                          # importance-weighted: E = Z
        z_raw += torch.exp(raw).sum(1) * n / k / draws                      # as if the draws were uniform
    err_corr = float(((z_corr - z_full).abs() / z_full).mean())
    err_raw = float(((z_raw - z_full).abs() / z_full).mean())
    assert err_corr < 0.05 and err_raw > 4 * err_corr, (err_corr, err_raw)
    uni = NegativeSampler(n, None, "uniform", 0.0)
    assert torch.allclose(uni.log_q[1:], uni.log_q[1])           # uniform: the correction is a constant


# ---------------------------------------------------------------------------------------------- FAISS
def test_flat_index_returns_exact_results_and_filters_history():
    rng = np.random.default_rng(0)
    vecs = rng.normal(size=(500, 16)).astype(np.float32)
    vecs /= np.linalg.norm(vecs, axis=1, keepdims=True)
    vecs[0] = 0
    q = rng.normal(size=(20, 16)).astype(np.float32)
    idx = ann.build_index(vecs, "flat")
    got, qps = ann.search(idx, q, 10)
    exact = np.argsort(-(q @ vecs.T), axis=1, kind="stable")[:, :10]
    assert (got == exact).all() and qps > 0
    excl_rows, excl_items = np.array([0, 0, 3]), exact[[0, 0, 3], [0, 1, 0]]
    filt = ann.filter_excluded(got, 5, excl_rows, excl_items)
    assert filt[0].tolist() == exact[0, 2:7].tolist() and filt[3].tolist() == exact[3, 1:6].tolist()
    assert filt[1].tolist() == exact[1, :5].tolist()
    assert ann.overlap_recall(filt, filt) == 1.0
    hnsw = ann.build_index(vecs, "hnsw", hnsw_m=16, ef_construction=100, ef_search=64)
    approx, _ = ann.search(hnsw, q, 10)
    assert ann.overlap_recall(approx, exact) > 0.9
    ivf = ann.build_index(vecs, "ivfpq", nlist=8, nprobe=8, pq_m=4, pq_nbits=6)
    assert ann.search(ivf, q, 10)[0].shape == (20, 10)
    assert ann.recall_metrics(exact, exact[:, 3], [1, 5]) == {"recall@1": 0.0, "recall@5": 1.0}


def test_ann_recall_from_candidate_positions_by_hand():
    cands = np.array([[7, 3, 9, -1],          # target 3 at position 1
                      [4, 5, 6, 8],           # target 8 at position 3
                      [1, 2, -1, -1],         # target 6 not retrieved (short row): a miss
                      [6, 2, 3, 1]])          # target 6 first
    target = np.array([3, 8, 6, 6])
    assert ann.recall_metrics(cands, target, [1, 2, 4]) == {"recall@1": 0.25, "recall@2": 0.5, "recall@4": 0.75}
    assert ann.recall_metrics(cands, target, [2], prefix="exact_") == {"exact_recall@2": 0.5}


# -------------------------------------------------------------------------------------------- metrics
def test_ranking_metrics_against_hand_computed_examples():
    scores = np.array([[0.9, 0.1, 0.5, 0.2],      # positive first: rank 0
                       [0.3, 0.8, 0.1, 0.6],      # positive (col 0) below 2 others: rank 2
                       [0.4, 0.4, 0.1, 0.0],      # tie with one other: counts against the positive -> 1
                       [0.9, 0.8, 0.7, 0.6]])     # no positive among the candidates (retriever missed)
    positive = np.zeros_like(scores, bool)
    positive[:3, 0] = True
    valid = np.ones_like(positive)
    liked = positive & np.array([True, False, False, False])[:, None]
    m = protocol_metrics(scores, scores, positive, liked, valid, k=2)
    assert set(m) == {"auc", "like_auc", "ndcg@2", "hr@1", "mrr", "positive_in_candidates"}
    assert m["hr@1"] == pytest.approx(1 / 4)
    assert m["mrr"] == pytest.approx((1 + 1 / 3 + 1 / 2) / 4)
    assert m["ndcg@2"] == pytest.approx((1 + 0 + 1 / math.log2(3)) / 4)     # rank 2 is outside @2
    assert m["positive_in_candidates"] == 0.75
    valid2 = valid.copy()
    valid2[1, 1] = False                                                    # an empty slot does not count
    assert protocol_metrics(scores, scores, positive, liked, valid2, k=2)["ndcg@2"] == pytest.approx(
        (1 + 1 / math.log2(3) + 1 / math.log2(3)) / 4)
    const = np.ones_like(scores)                                            # a constant scorer ranks last
    mc = protocol_metrics(const, const, positive, liked, valid, k=2)
    assert mc["hr@1"] == 0.0 and mc["mrr"] == pytest.approx(3 * (1 / 4) / 4)


def test_beside_oracle():
    m = {"auc": 0.7, "positive_in_candidates": 0.5}
    assert beside_oracle(m, None) == m
    assert beside_oracle(m, {"auc": 0.9, "positive_in_candidates": 0.5}, skip=("positive_in_candidates",)) == {
        "auc": 0.7, "positive_in_candidates": 0.5, "oracle_auc": 0.9}


def _queries(target, mask_rows=(), mask_items=()):
    n = len(target)
    return QuerySet("test", np.arange(n), torch.zeros(n, 5, dtype=torch.int32), np.asarray(target),
                    np.asarray(mask_rows, dtype=np.int64), np.asarray(mask_items, dtype=np.int64))


def test_retrieval_catalogue_ranks_by_hand_ties_count_against_the_target():
    # items 0..5 (0 = padding, never counted); one row per query
    scores = torch.tensor([[9.0, 0.5, 0.9, 0.1, 0.7, 0.3],     # target 4 (0.7): item 2 higher -> 1
                           [9.0, 0.5, 0.5, 0.5, 0.1, 0.2],     # target 1 (0.5) ties items 2, 3 -> 0 + 2 = 2
                           [9.0, 0.4, 0.8, 0.4, 0.9, 0.0],     # target 3 (0.4); item 4 (0.9) excluded ->
                           [0.0, 0.2, 0.2, 0.2, 0.2, 0.2]])    #   item 2 higher + item 1 tied = 2
    # row 3: everything ties at 0.2; items 2, 3 excluded -> the live items 1 and 4 tie with target 5 -> 2
    q = _queries([4, 1, 3, 5], mask_rows=[2, 3, 3], mask_items=[4, 2, 3])
    ranks = catalogue_ranks(lambda a, b: scores[a:b].clone(), q, 4, batch=3)   # batches split the rows
    assert ranks.tolist() == [1, 2, 2, 2]                     # strictly-higher counting would give [1, 0, 1, 0]
    from pipeline.core.ranking import rank_metrics

    assert rank_metrics(ranks, recall=(1, 2, 3)) == {"recall@1": 0.0, "recall@2": 0.25, "recall@3": 1.0}
    # a held-out item that is itself excluded (a re-click) cannot be retrieved: missed
    q2 = _queries([4], mask_rows=[0], mask_items=[4])
    assert catalogue_ranks(lambda a, b: scores[:1].clone(), q2, 1).tolist() == [-1]


def test_retrieval_task_monitor_and_keys_by_hand():
    class Towers(torch.nn.Module):
        """User vectors from column 0 of x; four items on the unit circle (ties between items 2 and 3)."""

        def __init__(self):
            super().__init__()
            self.items = torch.tensor([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0], [0.0, 1.0], [-1.0, 0.0]])

        def user_vec(self, x):
            return torch.stack([torch.tensor([1.0, 0.0]) if int(u) == 0 else torch.tensor([0.0, 1.0])
                                for u in x[:, 0]])

        def all_item_vecs(self):
            return self.items

    sampler = NegativeSampler(4, None, "uniform", 0.0)
    task = RetrievalTask(sampler, num_negatives=2, temperature=1.0, logq=False, mask_hits=True, monitor_k=2,
                         eval_batch=8)
    assert task.monitor == "recall@2" and task.ks == tuple(sorted(set(EXACT_KS) | {2}))
    q = QuerySet("valid", np.array([0, 1]), torch.tensor([[0, 0, 0, 1, 0], [1, 0, 0, 3, 0]], dtype=torch.int32),
                 np.array([1, 3]), np.zeros(0, np.int64), np.zeros(0, np.int64))

    class T:
        raw_model = Towers()

    m = task.evaluate(T, q)
    # user 0: target 1 scores 1, nothing higher -> rank 0; user 1: target 3 ties item 2 -> rank 1
    assert m["recall@2"] == 1.0 and m["recall@10"] == 1.0 and set(m) == {f"recall@{k}" for k in task.ks}
    task1 = RetrievalTask(sampler, num_negatives=2, temperature=1.0, logq=False, mask_hits=True, monitor_k=1,
                          eval_batch=8)
    assert task1.evaluate(T, q)["recall@1"] == 0.5          # the tie with item 2 costs user 1 the top slot


def test_pooled_auc_matches_sklearn_and_protocol_metrics():
    rng = np.random.default_rng(3)
    scores = rng.random((50, 8))
    positive = np.zeros((50, 8), bool)
    positive[np.arange(50), rng.integers(0, 8, 50)] = True
    valid = rng.random((50, 8)) > 0.1
    valid |= positive
    assert pooled_auc(scores, positive, valid) == pytest.approx(roc_auc_score(positive[valid], scores[valid]))
    liked = positive & (rng.random((50, 8)) < 0.3)
    m = protocol_metrics(scores, scores, positive, liked, valid, 5)
    assert m["like_auc"] == pytest.approx(roc_auc_score(liked[valid], scores[valid]))
    assert pooled_auc(scores, np.zeros_like(positive), valid) is None


# ------------------------------------------------------------------------------------------ bad input
def _consume(path, batch_rows=4):
    for _ in UserChunker(path, batch_rows).chunks(iter_log(path, batch_rows)):
        pass


GOOD = [row(1, 10, 1), row(1, 11, 0), row(2, 12, 1), row(2, 13, 0)]


@pytest.mark.parametrize("case, rows, header, line, field", [
    ("wrong header", GOOD, HEADER.replace("watching_times", "watch_time"), 1, "watching_times"),
    ("non-binary click", GOOD[:2] + [row(2, 12, 2)], HEADER, 4, "click"),
    ("negative id", GOOD[:3] + [row(2, -13, 0)], HEADER, 5, "item_id"),
    ("non-integer id", GOOD[:1] + [("1", "x11", 0, 0, 0, 0, 1, 0, 1, 3)], HEADER, 3, "item_id"),
    ("float id", GOOD + [row(3, "14.5", 0)], HEADER, 6, "item_id"),
    ("user not contiguous", GOOD + [row(1, 14, 0)], HEADER, 6, "user_id"),
    ("age out of range", GOOD[:1] + [row(1, 11, 0, age=9)], HEADER, 3, "age"),
])
def test_bad_inputs_raise_one_clear_error(tmp_path, case, rows, header, line, field):
    path = write_log(tmp_path / "QB-video.csv", rows, header)
    with pytest.raises(DataError) as e:
        _consume(path, batch_rows=2)
    assert e.value.row == line and e.value.field == field, str(e.value)
    assert str(path) in str(e.value)


def test_header_only_and_noncontiguous_across_batches(tmp_path):
    empty = write_log(tmp_path / "empty.csv", [])
    with pytest.raises(DataError, match="no data rows"):
        _consume(empty)
    rows = [row(1, i, i % 2) for i in range(10)] + [row(2, 50, 1)] * 3 + [row(1, 99, 0)]
    path = write_log(tmp_path / "split.csv", rows)
    with pytest.raises(DataError, match="user 1 reappears") as e:
        _consume(path, batch_rows=3)
    assert e.value.row == 15


def test_params_validation_names_the_key():
    from pipeline.core.params import load_all
    from pipeline.tenrec.params import CHECKS, SECTIONS
    from tests.conftest import ROOT

    def load(**overrides):
        return load_all(ROOT / "params.yaml", SECTIONS, CHECKS, overrides=overrides)

    p = load()
    assert p.ranking_eval.rerank_k <= p.ann.top_k and p.encoder_scaling.lengths
    for key, value in (("ann.index", "annoy"), ("ranking.num_heads", 3), ("tenrec.min_clicks", 2),
                       ("retrieval.sampler", "zipf"), ("ranking_eval.rerank_k", 0), ("encoder_scaling.lengths", []),
                       ("encoder_scaling.lengths", [32, 0])):
        with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
            load(**{key: value})
    with pytest.raises(ConfigError, match="ranking_eval.rerank_k: 300 > ann.top_k 200"):
        load(**{"ranking_eval.rerank_k": 300})
    with pytest.raises(ConfigError, match="ann.pq_m: 5 does not divide retrieval.embedding_dim 32"):
        load(**{"ann.index": "ivfpq", "ann.pq_m": 5})
    with pytest.raises(ConfigError, match="ranking.scaling_lengths: unknown key"):
        load(**{"ranking.scaling_lengths": [32]})


STAGES = ("download", "prepare", "train_retrieval", "build_index", "train_ranking", "evaluate", "encoder_scaling")


@pytest.mark.parametrize("name", STAGES)
def test_stage_params_load_and_cross_checks_follow_the_declared_sections(name):
    """Each stage loads its PARAMS from the repo's params.yaml; a cross-section check runs only in the stages
    that load both of its sections (build_index: ann + retrieval; evaluate: ranking_eval + ann)."""
    import importlib

    from pipeline.core.params import UndeclaredParam, load_stage
    from pipeline.tenrec.params import CHECKS, SECTIONS
    from tests.conftest import ROOT

    mod = importlib.import_module(f"stages.tenrec.{name}")
    view = load_stage(ROOT / "params.yaml", mod.PARAMS, SECTIONS, CHECKS)
    src = open(mod.__file__, encoding="utf-8").read()
    assert "pipeline.core.config" not in src and "pipeline.ctr" not in src
    bad = {"ann.index": "ivfpq", "ann.pq_m": 5, "ranking_eval.rerank_k": 201}
    if name in ("build_index", "evaluate"):
        with pytest.raises(ConfigError, match="ann.pq_m" if name == "build_index" else "ranking_eval.rerank_k"):
            load_stage(ROOT / "params.yaml", mod.PARAMS, SECTIONS, CHECKS, overrides=bad)
    else:
        load_stage(ROOT / "params.yaml", mod.PARAMS, SECTIONS, CHECKS, overrides=bad)
    if name == "train_ranking":                                  # ranking whole; rerank_k moved out
        assert "ranking" in mod.PARAMS and not hasattr(view.ranking, "rerank_k")
        with pytest.raises(UndeclaredParam):
            view.tenrec.scenario
