"""Stage tenrec_build_index: FAISS over the item vectors; top-K candidates for every evaluation user."""

from __future__ import annotations

import logging
import time

from pipeline.core.io import atomic_outputs, write_json
from stages.tenrec.common import (CANDIDATES, EMBEDDINGS, PREPARED, REPORTS, ParamsOpt, check_pq, clean, dataset_name,
                                  load)

log = logging.getLogger(__name__)


def build_index(params: str = ParamsOpt) -> None:
    """``ann.index`` over the item embeddings; candidates of the valid and test queries; Recall@k of the
    held-out click, the ANN's recall against exact search, queries/s."""
    import faiss
    import numpy as np

    from pipeline.tenrec import ann
    from pipeline.tenrec.prepare import clicked_sets, load_sequences, split_users

    p = load(params)
    check_pq(p)
    a = p.ann
    faiss.omp_set_num_threads(a.threads)
    s = load_sequences(PREPARED)
    split = split_users(s, p.tenrec.min_clicks)
    with np.load(EMBEDDINGS / "embeddings.npz") as z:
        items, queries = z["items"], {"test": z["test_queries"]}
        if not np.array_equal(z["eval_users"], split.eval_users):
            raise RuntimeError("embeddings.npz is out of step with the prepared data (re-run train_retrieval)")
    t0 = time.perf_counter()
    index = ann.build_index(items, a.index, hnsw_m=a.hnsw_m, ef_construction=a.hnsw_ef_construction,
                            ef_search=a.hnsw_ef_search, nlist=a.ivf_nlist, nprobe=a.ivf_nprobe, pq_m=a.pq_m,
                            pq_nbits=a.pq_nbits, seed=p.seed)
    build_s = time.perf_counter() - t0
    exact_index = ann.build_index(items, "flat")
    results, cands = {}, {}
    for name, q in queries.items():
        upto = split.n_train[split.eval_users] + (1 if name == "test" else 0)
        rows, excl = (clicked_sets(s, split.eval_users, upto) if p.retrieval.exclude_history
                      else (np.zeros(0, np.int64), np.zeros(0, np.int64)))
        extra = min(int(upto.max()), a.top_k) + 1 if p.retrieval.exclude_history else 1
        width = min(a.top_k + extra, len(items))
        raw, qps = ann.search(index, q, width)
        exact_raw, exact_qps = ann.search(exact_index, q, width)
        cand = ann.filter_excluded(raw, a.top_k, rows, excl)
        exact = ann.filter_excluded(exact_raw, a.top_k, rows, excl)
        target = split.test_item if name == "test" else split.valid_item
        results[name] = {**ann.hit_recall(cand, target, a.recall_at),
                         **{f"exact_{k}": v for k, v in ann.hit_recall(exact, target, a.recall_at).items()},
                         "ann_recall_vs_exact": ann.overlap_recall(cand, exact),
                         "qps": round(qps, 1), "exact_qps": round(exact_qps, 1)}
        cands[name] = cand.astype(np.int32)
    report = {"dataset": dataset_name(p, (PREPARED / "meta.json").is_file() and _synthetic()),
              "split": "test queries (each user's last click held out)", "protocol": f"retrieved_top_{a.top_k}",
              "index": a.index, "top_k": a.top_k, "items": int(len(items) - 1), "queries": int(len(split.eval_users)),
              "build_seconds": round(build_s, 2), "threads": a.threads, "metrics": results}
    with atomic_outputs() as out:
        d = out.dir(CANDIDATES)
        np.savez(d / "candidates.npz", eval_users=split.eval_users, **cands)
        write_json(d / "meta.json", {"index": a.index, "top_k": a.top_k})
        write_json(out.file(REPORTS / "index.json"), clean(report))
    log.info("%s index: test %s", a.index, results["test"])


def _synthetic() -> bool:
    from pipeline.core.io import read_json

    return bool(read_json(PREPARED / "meta.json").get("synthetic"))
