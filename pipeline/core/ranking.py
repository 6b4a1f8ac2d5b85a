"""Ranking metrics, one implementation and one tie rule for every branch (retrieval, ranking, sequential
recommendation).

Setting: each row (a user / query) has one held-out target and a set of scored candidates.

**Tie rule: ties count against the model.** The target's 0-based rank is the number of valid candidates
scoring strictly higher than it plus the number of *other* valid candidates scoring exactly the same. So a
constant scorer ranks the target last, never first, and no metric can be raised by emitting ties.
A row whose target is not among its candidates (e.g. a retriever missed it) has rank ``-1`` ("missed")
and scores 0 on every metric.

From the rank r (one relevant item, so IDCG = 1):

* ``ndcg@k``   = 1 / log2(r + 2) if 0 <= r < k, else 0
* ``hr@k``     = [0 <= r < k] (hit ratio; with one target per row it equals ``recall@k``)
* ``recall@k`` = [0 <= r < k] (the name retrieval uses; same number as ``hr@k``)
* ``mrr``      = 1 / (r + 1) (not truncated), 0 if missed

Key spelling everywhere: ``<metric>@<k>`` (``ndcg@20``, ``hr@1``, ``recall@100``), ``mrr``. Each value is the
mean over rows. AUC / logloss are scikit-learn's (``roc_auc_score``, ``log_loss``), never re-implemented.
"""

from __future__ import annotations

from typing import Iterable

import numpy as np

MISSED = -1


def target_ranks(scores: np.ndarray, target: np.ndarray, valid: np.ndarray | None = None) -> np.ndarray:
    """[U] rank of each row's target under the tie rule; ``target`` [U, C] bool (at most one True per row)
    or [U] int column index; ``valid`` [U, C] bool (False = empty slot). Rows without a valid target: -1."""
    scores = np.asarray(scores)
    valid = np.ones(scores.shape, dtype=bool) if valid is None else np.asarray(valid, dtype=bool)
    rows = np.arange(scores.shape[0])
    if np.asarray(target).ndim == 1:
        col = np.asarray(target, dtype=np.int64)
        has = valid[rows, col]
    else:
        mask = np.asarray(target, dtype=bool) & valid
        has = mask.any(1)
        col = np.argmax(mask, axis=1)
    s_t = scores[rows, col][:, None]
    higher = ((scores > s_t) & valid).sum(1)
    ties = ((scores == s_t) & valid).sum(1) - 1
    return np.where(has, higher + ties, MISSED).astype(np.int64)


def rank_from_counts(higher: np.ndarray, ties: np.ndarray) -> np.ndarray:
    """The tie rule from counts taken elsewhere (e.g. a streaming scan over a catalogue): ``higher`` =
    candidates scoring strictly above the target, ``ties`` = other candidates scoring equal to it."""
    return (np.asarray(higher, dtype=np.int64) + np.asarray(ties, dtype=np.int64))


def rank_metrics(ranks: np.ndarray, *, ndcg: Iterable[int] = (), hr: Iterable[int] = (),
                 recall: Iterable[int] = (), mrr: bool = False, prefix: str = "") -> dict:
    """Mean NDCG@k / HR@k / Recall@k / MRR over rows from target ranks (-1 = missed). Empty input: 0.0."""
    r = np.asarray(ranks, dtype=np.int64)
    found = r >= 0
    out: dict[str, float] = {}

    def mean(v: np.ndarray) -> float:
        return float(v.mean()) if len(v) else 0.0

    for k in ndcg:
        out[f"{prefix}ndcg@{k}"] = mean(np.where(found & (r < k), 1.0 / np.log2(np.maximum(r, 0) + 2.0), 0.0))
    for k in hr:
        out[f"{prefix}hr@{k}"] = mean(found & (r < k))
    for k in recall:
        out[f"{prefix}recall@{k}"] = mean(found & (r < k))
    if mrr:
        out[f"{prefix}mrr"] = mean(np.where(found, 1.0 / (np.maximum(r, 0) + 1.0), 0.0))
    return out


def position_ranks(candidates: np.ndarray, target: np.ndarray) -> np.ndarray:
    """Ranks from an already ordered candidate list (ANN output: position = rank, no scores, so no ties);
    -1 where the target is not in the row."""
    hit = np.asarray(candidates) == np.asarray(target)[:, None]
    return np.where(hit.any(1), hit.argmax(1), MISSED).astype(np.int64)
