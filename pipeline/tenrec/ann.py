"""The FAISS candidate index over the item tower's (L2-normalised) vectors: inner product = cosine.

``ann.index``: ``flat`` (exact, IndexFlatIP), ``hnsw`` (IndexHNSWFlat, M / efConstruction / efSearch) or
``ivfpq`` (IndexIVFPQ over a flat IP coarse quantizer, nlist / nprobe / m sub-quantizers of nbits).
Searches ask for ``k + max excluded`` neighbours and drop each user's excluded items (earlier clicks) and
the padding row, so every user gets exactly ``k`` candidates when the catalogue allows it.
"""

from __future__ import annotations

import logging
import time

import faiss
import numpy as np

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


def hit_recall(candidates: np.ndarray, target: np.ndarray, ks) -> dict:
    """Recall@k of the held-out item among each row's first k candidates."""
    hit = candidates == target[:, None]
    pos = np.where(hit.any(1), hit.argmax(1), candidates.shape[1])
    return {f"recall_{k}": float((pos < k).mean()) for k in ks}
