"""Full-ranking and sampled metrics on hand examples; the oracle; resume of a seqrec run."""

import math

import numpy as np
import pytest
import torch

from pipeline.core.ranking import target_ranks
from pipeline.seqrec.synthetic import Oracle
from pipeline.seqrec.train import EvalSet, SeqRecTask, eval_split, pack_sequences, sample_negatives, split_metrics


def test_rank_metrics_by_hand():
    ranks = np.array([0, 1, 4, 9, 30])
    m = split_metrics(ranks)
    assert list(m) == ["ndcg@5", "hr@5", "ndcg@10", "hr@10", "ndcg@20", "hr@20"]       # the pinned reports' order
    assert m["hr@5"] == pytest.approx(3 / 5) and m["hr@10"] == pytest.approx(4 / 5) and m["hr@20"] == pytest.approx(4 / 5)
    assert m["ndcg@5"] == pytest.approx((1 + 1 / math.log2(3) + 1 / math.log2(6)) / 5)
    assert m["ndcg@10"] == pytest.approx((1 + 1 / math.log2(3) + 1 / math.log2(6) + 1 / math.log2(11)) / 5)


def test_pessimistic_ties():
    s = np.array([[0.5, 0.9, 0.5, 0.1], [1.0, 0.0, 0.0, 0.0]])
    assert target_ranks(s, np.array([0, 0])).tolist() == [2, 0]


class Fixed(torch.nn.Module):
    """A 'model' whose last hidden state is a fixed score vector over 5 items (one-hot item vectors)."""

    def __init__(self, scores):
        super().__init__()
        self.scores = torch.tensor(scores, dtype=torch.float32)
        self.w = torch.nn.Parameter(torch.zeros(1))

    def forward(self, seq, segments):
        """Every token of evaluation row k (packed: segment k + 1) gets row k's scores."""
        return self.scores[(segments - 1).clamp_min(0)]

    def all_item_vectors(self):
        return torch.eye(6)                       # item i -> e_i, so score(i) = scores[i]


def test_full_ranking_with_history_masking_by_hand():
    # user 0: history [1, 2], target 3; scores: item 1 > item 2 > item 3 > item 4 > item 5
    # masked history -> target rank 0; unmasked -> rank 2
    scores = [[0.0, 0.9, 0.8, 0.7, 0.6, 0.5], [0.0, 0.1, 0.2, 0.3, 0.4, 0.9]]
    data = EvalSet("test", torch.tensor([[0, 1, 2], [0, 1, 2]]), np.array([3, 4]), np.array([0, 1]),
                   [np.array([1, 2]), np.array([1, 2])])
    t = SeqRecTask(loss="ce", num_items=5, mask_history=True)
    m = t.evaluate_model(Fixed(scores), data)
    # user 1: target 4 scores 0.4, only item 5 (0.9) above among unmasked {3, 4, 5} -> rank 1
    assert m["hr@5"] == 1.0 and m["ndcg@5"] == pytest.approx((1 + 1 / math.log2(3)) / 2)
    m2 = SeqRecTask(loss="ce", num_items=5, mask_history=False).evaluate_model(Fixed(scores), data)
    # unmasked: user 0 rank 2 (items 1, 2 above), user 1 rank 1
    assert m2["ndcg@5"] == pytest.approx((1 / math.log2(4) + 1 / math.log2(3)) / 2)


def test_sampled_negatives_are_distinct_unseen_and_seeded():
    g = np.random.default_rng(0)
    neg = sample_negatives(g, 1000, 50, np.array([1, 2, 3, 500]))
    assert len(neg) == 50 == len(set(neg.tolist())) and not set(neg.tolist()) & {1, 2, 3, 500}
    assert neg.min() >= 1 and neg.max() <= 1000
    dense = sample_negatives(np.random.default_rng(0), 20, 15, np.array([4]))
    assert len(set(dense.tolist())) == 15 and 4 not in dense
    small = sample_negatives(np.random.default_rng(0), 10, 100, np.array([4]))   # catalogue too small: all others
    assert sorted(small.tolist()) == [1, 2, 3, 5, 6, 7, 8, 9, 10]


def test_leave_one_out_and_packing():
    seqs = [np.array([1, 2, 3, 4, 5]), np.array([6, 7, 8, 9])]
    v = eval_split(seqs, "valid", max_len=3)
    assert v.target.tolist() == [4, 8] and v.hist[0].tolist() == [1, 2, 3] and v.hist[1].tolist() == [0, 6, 7]
    t = eval_split(seqs, "test", max_len=3)
    assert t.target.tolist() == [5, 9] and t.full_hist[0].tolist() == [1, 2, 3, 4]
    tr = eval_split(seqs, "train", max_len=3)
    assert tr.target.tolist() == [3, 7]
    packed = pack_sequences([np.arange(1, 9)], max_len=3)        # 8 items, windows of 4 overlapping by 1
    assert packed.x.tolist() == [[5, 6, 7, 8], [2, 3, 4, 5], [0, 0, 1, 2]]


def test_oracle_scores_follow_the_planted_process():
    # 2 clusters x 2 items; user prefers cluster 1; last item in cluster 0; stay 0.5
    o = Oracle(np.array([0, 0, 0, 1, 1]), np.array([0, 0.75, 0.25, 0.5, 0.5]), np.array([[0.2, 0.8]]), 0.5)
    s = np.exp(o.scores(0, np.array([1]), np.array([2, 3, 4])))
    # item 2: cluster 0 weight 0.5 + 0.5*0.2 = 0.6, p(2 | c0, item 1 seen) = 0.25 / 0.25 = 1
    # items 3, 4: 0.5 * 0.8 = 0.4 each, p = 0.5
    assert s == pytest.approx([0.6, 0.2, 0.2])
    assert s.sum() == pytest.approx(1.0)


# ---- the evaluation through pipeline.core.ranking gives the numbers of seqrec's former own rank code

def _old_rank_of_target(scores, target_col):
    t = scores[np.arange(len(scores)), target_col][:, None]
    return (scores > t).sum(1) + (scores == t).sum(1) - 1


def _old_rank_metrics(ranks, prefix=""):
    out = {}
    for k in (5, 10, 20):
        hit = ranks < k
        out[f"{prefix}ndcg@{k}"] = float(np.mean(np.where(hit, 1.0 / np.log2(ranks + 2.0), 0.0)))
        out[f"{prefix}hr@{k}"] = float(np.mean(hit))
    return out


def _old_evaluate(task, scores, data, oracle, cands):
    """The pre-core evaluation (rank loops included), on the Fixed model's scores."""
    ranks, oranks = [], []
    for r, (u, hist, t) in enumerate(zip(data.users, data.full_hist, data.target)):
        if cands is not None:
            c = cands[r]
            s = np.asarray(scores[r], dtype=np.float32)[c]
            s[c == 0] = -np.inf
            ranks.append(_old_rank_of_target(s[None], np.array([0]))[0])
            so = oracle.scores(int(u), hist, np.maximum(c, 1))
            so[c == 0] = -np.inf
            oranks.append(int((so > so[0]).sum() + (so == so[0]).sum() - 1))
        else:
            s = np.asarray(scores[r], dtype=np.float32).copy()
            s[0] = -np.inf
            so = oracle.scores(int(u), hist, np.arange(1, task.num_items + 1))
            if task.mask_history:
                keep = hist[hist != t]
                s[keep] = -np.inf
                so[keep - 1] = -np.inf
            ranks.append(_old_rank_of_target(s[None], np.array([t]))[0])
            oranks.append(int((so > so[t - 1]).sum() + (so == so[t - 1]).sum() - 1))
    return {**_old_rank_metrics(np.asarray(ranks)), **_old_rank_metrics(np.asarray(oranks), "oracle_")}


@pytest.mark.parametrize("protocol,mask", [("full_ranking", True), ("full_ranking", False), ("sampled_4", True)])
def test_numbers_equal_the_former_rank_code_with_ties(protocol, mask):
    g = np.random.default_rng(7)
    n_items, users = 12, 40
    scores = np.round(g.random((users, n_items + 1)), 1)                     # quantised: many ties
    scores[:, 0] = 0.0
    full = [g.choice(np.arange(1, n_items + 1), size=int(g.integers(2, 6)), replace=False) for _ in range(users)]
    data = EvalSet("test", torch.tensor(np.stack([np.pad(h[:-1], (5 - len(h[:-1]), 0)) for h in full])),
                   np.array([h[-1] for h in full]), np.arange(users), [h[:-1] for h in full])
    assert sum(int((scores[r, 1:] == scores[r, h[-1]]).sum()) > 1 for r, h in enumerate(full)) > 10   # target ties
    cl = np.concatenate([[0], np.repeat(np.arange(3), 4)])
    oracle = Oracle(cl, np.concatenate([[0.0], np.round(g.random(n_items), 1) + 0.1]), g.dirichlet(np.ones(3), users),
                    0.5)
    t = SeqRecTask(loss="ce", num_items=n_items, protocol=protocol, eval_negatives=4, mask_history=mask, oracle=oracle,
                   seed=3)
    got = t.evaluate_model(FixedN(scores), data, with_oracle=True)
    cands = t._candidates(data) if protocol != "full_ranking" else None
    want = _old_evaluate(t, scores, data, oracle, cands)
    assert {k: got[k] for k in want} == want                                 # exactly, not approximately


class FixedN(Fixed):
    def all_item_vectors(self):
        return torch.eye(self.scores.shape[1])
