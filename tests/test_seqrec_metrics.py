"""Full-ranking and sampled metrics on hand examples; the oracle; resume of a seqrec run."""

import math

import numpy as np
import pytest
import torch

from pipeline.seqrec.synthetic import Oracle
from pipeline.seqrec.train import (EvalSet, SeqRecTask, eval_split, pack_sequences, rank_metrics, rank_of_target,
                                   sample_negatives)


def test_rank_metrics_by_hand():
    ranks = np.array([0, 1, 4, 9, 30])
    m = rank_metrics(ranks)
    assert m["hr@5"] == pytest.approx(3 / 5) and m["hr@10"] == pytest.approx(4 / 5) and m["hr@20"] == pytest.approx(4 / 5)
    assert m["ndcg@5"] == pytest.approx((1 + 1 / math.log2(3) + 1 / math.log2(6)) / 5)
    assert m["ndcg@10"] == pytest.approx((1 + 1 / math.log2(3) + 1 / math.log2(6) + 1 / math.log2(11)) / 5)


def test_pessimistic_ties():
    s = np.array([[0.5, 0.9, 0.5, 0.1], [1.0, 0.0, 0.0, 0.0]])
    assert rank_of_target(s, np.array([0, 0])).tolist() == [2, 0]


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
