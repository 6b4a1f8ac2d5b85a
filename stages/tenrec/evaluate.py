"""Stage tenrec_evaluate: the ranker on the test clicks under both protocols, beside the oracle; the scored
candidates as prediction files."""

from __future__ import annotations

import logging

from pipeline.core.io import atomic_outputs, read_json, write_json
from pipeline.core.params import load_stage
from pipeline.tenrec.params import CHECKS, AnnParams, RankingEvalParams, RankingParams, TenrecParams
from stages.tenrec.common import CANDIDATES, MODELS, PREDICTIONS, PREPARED, RAW, REPORTS, ParamsOpt

log = logging.getLogger(__name__)

PARAMS = ("seed", "tenrec.min_clicks", "ann.top_k", "ranking", "ranking_eval")


def evaluate(params: str = ParamsOpt) -> None:
    """``sampled_<1+n>``: the held-out click among ``ranking.sampled_negatives`` uniform negatives (the seed's
    table); ``retrieved_top_k``: the first ``ranking_eval.rerank_k`` ANN candidates. Model and oracle figures,
    and on synthetic data the click head's agreement with the oracle over each set's valid candidates
    (pipeline/core/calibration.py's ``oracle_agreement``: here, so that only this stage depends on it). Every
    scored candidate goes to data/tenrec/predictions/test_<protocol>.parquet (pipeline/tenrec/ranking.py's
    prediction files, the format ``recdag tenrec predict`` writes)."""
    from pipeline.core.calibration import oracle_agreement
    from pipeline.tenrec import ranking as rk
    from pipeline.tenrec.prepare import load_sequences, split_users
    from pipeline.tenrec.reports import clean, prepared_dataset
    from pipeline.tenrec.synthetic import load_world

    p = load_stage(params, PARAMS, (TenrecParams, AnnParams, RankingParams, RankingEvalParams), CHECKS)
    rp, rerank_k = p.ranking, p.ranking_eval.rerank_k
    s = load_sequences(PREPARED)
    split = split_users(s, p.tenrec.min_clicks)
    model = rk.load_ranker(s, rp, MODELS / "ranking" / "model.pt")
    test_cands = rk.load_candidates(CANDIDATES / "candidates.npz", split, rerank_k)
    world = load_world(RAW)
    protocols, runs = rk.evaluate_protocols(model, s, split, test_cands, rp, seed=p.seed, world=world)
    for run in runs:
        if run.p_true_click is not None:
            v = run.cs.valid
            protocols[run.cs.protocol].update(oracle_agreement(run.scores.logit_click[v], run.p_true_click[v]))
    dataset, _ = prepared_dataset(read_json(PREPARED / "meta.json"))
    report = rk.evaluate_report(protocols, [r.cs for r in runs], rp, rerank_k,
                                read_json(CANDIDATES / "meta.json")["index"], dataset=dataset,
                                synthetic=world is not None)
    with atomic_outputs() as out:
        d = out.dir(PREDICTIONS)
        for run in runs:
            rk.write_predictions(d / f"test_{run.cs.protocol}.parquet", s, run)
        write_json(out.file(REPORTS / "evaluate.json"), clean(report))
        out.file(REPORTS / "evaluate.md").write_text(rk.evaluate_markdown(report, rp.ndcg_k), encoding="utf-8")
    log.info("evaluate: %s", protocols)
