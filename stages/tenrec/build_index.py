"""Stage tenrec_build_index: FAISS over the item vectors; top-K candidates for every evaluation user."""

from __future__ import annotations

import logging

from pipeline.core.io import atomic_outputs, read_json, write_json
from pipeline.core.params import load_stage
from pipeline.tenrec.params import CHECKS, AnnParams, RetrievalParams, TenrecParams
from stages.tenrec.common import CANDIDATES, EMBEDDINGS, PREPARED, REPORTS, ParamsOpt

log = logging.getLogger(__name__)

PARAMS = ("seed", "tenrec.min_clicks", "retrieval.embedding_dim", "retrieval.exclude_history", "ann")


def build_index(params: str = ParamsOpt) -> None:
    """``ann.index`` over the item embeddings; candidates of the test queries; ``recall@k`` of the held-out
    click (and exact search's), the ANN's recall against exact search, queries/s."""
    import numpy as np

    from pipeline.tenrec import ann
    from pipeline.tenrec.prepare import load_sequences, split_users
    from pipeline.tenrec.reports import clean, prepared_dataset

    p = load_stage(params, PARAMS, (TenrecParams, RetrievalParams, AnnParams), CHECKS)
    a = p.ann
    s = load_sequences(PREPARED)
    split = split_users(s, p.tenrec.min_clicks)
    items, test_queries = ann.load_embeddings(EMBEDDINGS / "embeddings.npz", split)
    cands, metrics, build_s = ann.index_candidates(s, split, items, test_queries, a,
                                                   exclude_history=p.retrieval.exclude_history, seed=p.seed)
    dataset, _ = prepared_dataset(read_json(PREPARED / "meta.json"))
    report = ann.index_report(a, metrics, n_items=len(items) - 1, n_queries=len(split.eval_users),
                              build_seconds=build_s, dataset=dataset)
    with atomic_outputs() as out:
        d = out.dir(CANDIDATES)
        np.savez(d / "candidates.npz", eval_users=split.eval_users, test=cands)
        write_json(d / "meta.json", {"index": a.index, "top_k": a.top_k})
        write_json(out.file(REPORTS / "index.json"), clean(report))
    log.info("%s index: test %s", a.index, metrics)
