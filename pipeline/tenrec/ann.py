"""The FAISS candidate index over the item tower's (L2-normalised) vectors: inner product = cosine.

``ann.index``: ``flat`` (exact, IndexFlatIP), ``hnsw`` (IndexHNSWFlat, M / efConstruction / efSearch) or
``ivfpq`` (IndexIVFPQ over a flat IP coarse quantizer, nlist / nprobe / m sub-quantizers of nbits).
Searches ask for ``k + max excluded`` neighbours and drop each user's excluded items (earlier clicks) and
the padding row, so every user gets exactly ``k`` candidates when the catalogue allows it. Recall of the
held-out click is :mod:`pipeline.core.ranking`'s ``recall@k`` over the candidate positions.
"""

from __future__ import annotations

import logging
import time

import faiss
import numpy as np

from pipeline.core.errors import DataError
from pipeline.core.ranking import position_ranks, rank_metrics
from pipeline.tenrec.prepare import Sequences, Split, clicked_sets

log = logging.getLogger(__name__)


def build_index(vectors: np.ndarray, kind: str, *, hnsw_m: int = 32, ef_construction: int = 200,
                ef_search: int = 128, nlist: int = 256, nprobe: int = 16, pq_m: int = 8, pq_nbits: int = 8,
                seed: int = 0) -> faiss.Index:
    """An inner-product index over ``vectors`` [n, d] (float32); ids are row numbers."""
    x = np.ascontiguousarray(vectors, dtype=np.float32)
    n, d = x.shape
    if kind == "flat":
        index = faiss.IndexFlatIP(d)
    elif kind == "hnsw":
        index = faiss.IndexHNSWFlat(d, hnsw_m, faiss.METRIC_INNER_PRODUCT)
        index.hnsw.efConstruction = ef_construction
        index.hnsw.efSearch = ef_search
    elif kind == "ivfpq":
        if d % pq_m:
            raise ValueError(f"pq_m {pq_m} does not divide the dimension {d}")
        nlist = max(1, min(nlist, n // 39))          # FAISS wants >= 39 training points per centroid
        quantizer = faiss.IndexFlatIP(d)
        index = faiss.IndexIVFPQ(quantizer, d, nlist, pq_m, pq_nbits, faiss.METRIC_INNER_PRODUCT)
        index.cp.seed = seed
        index.pq.cp.seed = seed
        index.train(x)
        index.nprobe = min(nprobe, nlist)
    else:
        raise ValueError(f"unknown index kind {kind}")
    index.add(x)
    return index


def search(index: faiss.Index, queries: np.ndarray, k: int, batch: int = 4096) -> tuple[np.ndarray, float]:
    """(ids [q, k], queries per second)."""
    q = np.ascontiguousarray(queries, dtype=np.float32)
    hnsw = getattr(faiss.downcast_index(index), "hnsw", None)
    if hnsw is not None and hnsw.efSearch < k:           # HNSW needs a search beam of at least k
        hnsw.efSearch = k
    out = np.empty((len(q), k), np.int64)
    t0 = time.perf_counter()
    for a in range(0, len(q), batch):
        _, out[a:a + batch] = index.search(q[a:a + batch], k)
    dt = time.perf_counter() - t0
    return out, len(q) / max(dt, 1e-9)


def filter_excluded(ids: np.ndarray, k: int, exclude_rows: np.ndarray, exclude_items: np.ndarray,
                    pad: int = 0) -> np.ndarray:
    """Per row, the first ``k`` ids that are not ``pad``, not -1 (FAISS: no result) and not excluded for that
    row (``(exclude_rows[j], exclude_items[j])`` pairs); short rows are filled with -1."""
    n, width = ids.shape
    bad = (ids < 0) | (ids == pad)
    if len(exclude_rows):
        big = np.int64(max(int(ids.max()), int(exclude_items.max()) if len(exclude_items) else 0) + 2)
        keys = np.arange(n, dtype=np.int64)[:, None] * big + ids
        ex = exclude_rows.astype(np.int64) * big + exclude_items
        bad |= np.isin(keys, ex)
    order = np.argsort(bad, axis=1, kind="stable")           # good ids first, original order kept
    out = np.take_along_axis(ids, order, 1)[:, :k]
    good = np.take_along_axis(~bad, order, 1)[:, :k]
    out = np.where(good, out, -1)
    if out.shape[1] < k:
        out = np.pad(out, ((0, 0), (0, k - out.shape[1])), constant_values=-1)
    return out


def overlap_recall(approx: np.ndarray, exact: np.ndarray) -> float:
    """|approx ∩ exact| / |exact| per row, averaged (the ANN's recall against exact search)."""
    n, k = exact.shape
    big = np.int64(max(int(approx.max()), int(exact.max())) + 2)
    rows = np.arange(n, dtype=np.int64)[:, None] * big
    e = (rows + exact)[exact >= 0]
    a = (rows + approx)[approx >= 0]
    valid = (exact >= 0).sum()
    return float(np.isin(e, a).sum() / max(valid, 1))


def recall_metrics(candidates: np.ndarray, target: np.ndarray, ks, prefix: str = "") -> dict:
    """``recall@k`` of the held-out item among each row's first k candidates (an ordered list: its position
    is its rank; pipeline.core.ranking)."""
    return rank_metrics(position_ranks(candidates, target), recall=ks, prefix=prefix)


def load_embeddings(path, split: Split) -> tuple[np.ndarray, np.ndarray]:
    """(item vectors, test query vectors) of train_retrieval's ``embeddings.npz``; DataError when it was
    written for other prepared data."""
    with np.load(path) as z:
        if not np.array_equal(z["eval_users"], split.eval_users):
            raise DataError(path, "out of step with the prepared data (its evaluation users differ)",
                            expected="embeddings written from the current data/tenrec/prepared: re-run "
                                     "tenrec_train_retrieval")
        return z["items"], z["test_queries"]


def index_candidates(s: Sequences, split: Split, items: np.ndarray, test_queries: np.ndarray, a, *,
                     exclude_history: bool, seed: int) -> tuple[np.ndarray, dict, float]:
    """The ``a.index`` index (``a``: the ``ann`` section) over ``items``; the first ``a.top_k`` candidates of
    every test query (the user's earlier clicks dropped when ``exclude_history``); their ``recall@k`` of the
    held-out click beside exact search's (``exact_recall@k``), the index's recall against exact search and
    queries/s of both. (candidates int32 [queries, top_k], metrics, build seconds)."""
    faiss.omp_set_num_threads(a.threads)
    t0 = time.perf_counter()
    index = build_index(items, a.index, hnsw_m=a.hnsw_m, ef_construction=a.hnsw_ef_construction,
                        ef_search=a.hnsw_ef_search, nlist=a.ivf_nlist, nprobe=a.ivf_nprobe, pq_m=a.pq_m,
                        pq_nbits=a.pq_nbits, seed=seed)
    build_s = time.perf_counter() - t0
    exact_index = build_index(items, "flat")
    upto = split.n_train[split.eval_users] + 1                  # test queries: train clicks + the valid click
    rows, excl = (clicked_sets(s, split.eval_users, upto) if exclude_history
                  else (np.zeros(0, np.int64), np.zeros(0, np.int64)))
    extra = min(int(upto.max()), a.top_k) + 1 if exclude_history else 1
    width = min(a.top_k + extra, len(items))
    raw, qps = search(index, test_queries, width)
    exact_raw, exact_qps = search(exact_index, test_queries, width)
    cand = filter_excluded(raw, a.top_k, rows, excl)
    exact = filter_excluded(exact_raw, a.top_k, rows, excl)
    metrics = {**recall_metrics(cand, split.test_item, a.recall_at),
               **recall_metrics(exact, split.test_item, a.recall_at, prefix="exact_"),
               "ann_recall_vs_exact": overlap_recall(cand, exact), "qps": round(qps, 1),
               "exact_qps": round(exact_qps, 1)}
    return cand.astype(np.int32), metrics, build_s


def index_report(a, metrics: dict, *, n_items: int, n_queries: int, build_seconds: float, dataset: str) -> dict:
    """reports/tenrec/index.json."""
    return {"dataset": dataset, "split": "test queries (each user's last click held out)",
            "protocol": f"retrieved_top_{a.top_k}", "index": a.index, "top_k": a.top_k, "items": int(n_items),
            "queries": int(n_queries), "build_seconds": round(build_seconds, 2), "threads": a.threads,
            "metrics": {"test": metrics}}
