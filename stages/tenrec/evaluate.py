"""Stage tenrec_evaluate: the ranker on the test clicks under both protocols, beside the oracle."""

from __future__ import annotations

import logging

from pipeline.core.io import atomic_outputs, read_json, write_json
from stages.tenrec.common import (CANDIDATES, MODELS, PREPARED, REPORTS, ParamsOpt, check_rerank, clean,
                                  dataset_name, load, oracle_world)

log = logging.getLogger(__name__)



def evaluate(params: str = ParamsOpt) -> None:
    """``sampled_<1+n>``: the held-out click among ``ranking.sampled_negatives`` uniform negatives (the seed's
    table); ``retrieved_top_k``: the first ``ranking.rerank_k`` ANN candidates. Model and oracle figures."""
    import numpy as np
    import torch

    from pipeline.tenrec import ranking as rk
    from pipeline.tenrec.metrics import protocol_metrics
    from pipeline.tenrec.prepare import load_sequences, split_users

    p = load(params)
    check_rerank(p)
    rp = p.ranking
    s = load_sequences(PREPARED)
    split = split_users(s, p.tenrec.min_clicks)
    model = rk.build_ranker(s, rp)
    model.load_state_dict(torch.load(MODELS / "ranking" / "model.pt", weights_only=True, map_location="cpu"))
    model.eval()
    with np.load(CANDIDATES / "candidates.npz") as z:
        if not np.array_equal(z["eval_users"], split.eval_users):
            raise RuntimeError("candidates.npz is out of step with the prepared data (re-run build_index)")
        test_cands = z["test"][:, :rp.rerank_k]
    idx = rk.eval_users(split, rp.eval_users, p.seed, "test")
    sets = [rk.sampled_candidates(s, split, "test", idx, rp.sampled_negatives, rp.max_len, p.seed),
            rk.retrieved_candidates(s, split, idx, test_cands, rp.max_len)]
    world = oracle_world()
    protocols = {}
    for cs in sets:
        m = rk.evaluate_candidates(model, cs, rp.ndcg_k, rp.eval_batch_size)
        if world is not None:
            oc, ol = rk.oracle_scores(world, s, cs)
            o = protocol_metrics(oc, ol, cs.positive, cs.liked, cs.valid, rp.ndcg_k)
            m.update({f"oracle_{k}": v for k, v in o.items() if k != "positive_in_candidates"})
        protocols[cs.protocol] = m
    index = read_json(CANDIDATES / "meta.json")
    report = {"dataset": dataset_name(p, world is not None), "synthetic": world is not None,
              "split": "test (each user's last click, leave-last-out)", "users": int(len(idx)),
              "encoder": rp.encoder, "index": index["index"],
              "protocol": list(protocols),
              "protocol_notes": {
                  sets[0].protocol: f"the held-out click among {rp.sampled_negatives} items drawn uniformly from "
                                    "the items the user never clicked (comparable with the seed's / Tenrec's table)",
                  sets[1].protocol: f"the first {rp.rerank_k} candidates of the {index['index']} index; a held-out "
                                    "click the retriever missed counts as a miss (0) on every ranking metric"},
              "metrics": protocols}
    with atomic_outputs() as out:
        write_json(out.file(REPORTS / "evaluate.json"), clean(report))
        out.file(REPORTS / "evaluate.md").write_text(_markdown(report, rp.ndcg_k), encoding="utf-8")
    log.info("evaluate: %s", protocols)


def _markdown(report: dict, k: int) -> str:
    cols = ["auc", "like_auc", f"ndcg_{k}", "hit_1", "mrr"]
    lines = [f"# Tenrec ranking: {report['dataset']}, {report['encoder']} ranker, {report['index']} index",
             "", f"{report['users']} test users. " + " ".join(f"`{p}`: {n}." for p, n in report["protocol_notes"].items()),
             "", "| protocol | scorer | " + " | ".join(cols) + " |", "|---|---|" + "---|" * len(cols)]

    def f(v):
        return "n/a" if v is None else f"{v:.4f}"

    for proto, m in report["metrics"].items():
        lines.append(f"| {proto} | model | " + " | ".join(f(m.get(c)) for c in cols) + " |")
        if report["synthetic"]:
            lines.append(f"| {proto} | oracle | " + " | ".join(f(m.get(f'oracle_{c}')) for c in cols) + " |")
    return "\n".join(lines) + "\n"
