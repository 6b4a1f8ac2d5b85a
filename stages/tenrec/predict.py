"""``recdag tenrec predict``: score a candidate set with a trained Tenrec ranker (a tool, not a DVC stage).

The model is a train_ranking folder (models/tenrec/ranking, or a copy): the ranker is rebuilt from the
folder's ``config.json`` (not from params) and its ``model.pt`` loaded with ``weights_only=True``; its
vocabulary must be the prepared data's (:func:`pipeline.tenrec.ranking.load_ranker_dir`). The candidate set
is built exactly as tenrec_evaluate (test) and the training monitor (valid) build it, from the same params
(``seed``, ``tenrec.min_clicks``, ``ranking.sampled_negatives``, ``ranking.eval_users``,
``ranking_eval.rerank_k``), so the same params give the same users, negatives and scores as the stage's
data/tenrec/predictions files. The history length is the model's own (``max_len`` of its config). The output
is one parquet in the format of pipeline/tenrec/ranking.py's prediction files (user, item, slot, label,
like, logit_click, p_click, logit_like, p_like, and p_true_click, p_true_like when ``--raw`` holds a
synthetic world), written atomically.
"""

from __future__ import annotations

import logging
from pathlib import Path

import typer

from stages.tenrec.common import CANDIDATES, MODELS, PREPARED, RAW

log = logging.getLogger(__name__)

PARAMS = ("seed", "tenrec.min_clicks", "ranking.sampled_negatives", "ranking.eval_users", "ranking.eval_batch_size",
          "ranking_eval.rerank_k")


def predict(
    out: Path = typer.Option(..., "--out", help="the prediction parquet to write (one row per valid (user, "
                                                "candidate) pair); written atomically"),
    model: Path = typer.Option(MODELS / "ranking", "--model", help="a trained ranker folder (config.json + "
                                                                   "model.pt, as tenrec_train_ranking writes it)"),
    prepared: Path = typer.Option(PREPARED, "--prepared", help="the prepared data the model was trained on "
                                                               "(tenrec_prepare's folder)"),
    split: str = typer.Option("test", "--split", help="test (each user's last click) | valid (the second-to-last, "
                                                      "the clicks training was monitored on)"),
    protocol: str = typer.Option("sampled", "--protocol", help="sampled (the held-out click among "
                                                               "ranking.sampled_negatives uniform non-clicked "
                                                               "items) | retrieved (the first ranking_eval.rerank_k "
                                                               "ANN candidates; test split only)"),
    candidates: Path = typer.Option(CANDIDATES / "candidates.npz", "--candidates",
                                    help="--protocol retrieved: the ANN candidates (tenrec_build_index's "
                                         "candidates.npz) of the same prepared data"),
    raw: Path = typer.Option(RAW, "--raw", help="the raw folder; when it holds the synthetic world (world.npz), "
                                                "the oracle's p_true_click / p_true_like columns are added"),
    params: str = typer.Option("params.yaml", "--params", help="params file: seed, tenrec.min_clicks, "
                               "ranking.sampled_negatives / eval_users / eval_batch_size and ranking_eval.rerank_k "
                               "(the candidate set tenrec_evaluate builds from the same params)"),
) -> None:
    """Score every candidate of one protocol's set with a trained ranker; write logits and probabilities of
    both heads to --out."""
    from pipeline.core.errors import ConfigError, DataError
    from pipeline.core.io import atomic_outputs
    from pipeline.core.params import load_stage
    from pipeline.tenrec import ranking as rk
    from pipeline.tenrec.params import CHECKS, RankingEvalParams, RankingParams, TenrecParams
    from pipeline.tenrec.prepare import ITEMS_FILE, SEQ_FILE, load_sequences, split_users
    from pipeline.tenrec.synthetic import WORLD, load_world

    if split not in ("test", "valid"):
        raise ConfigError(f"--split: '{split}' is not one of test, valid")
    if protocol not in rk.PROTOCOLS:
        raise ConfigError(f"--protocol: '{protocol}' is not one of {', '.join(rk.PROTOCOLS)}")
    if protocol == "retrieved" and split != "test":
        raise ConfigError("--protocol retrieved: the ANN candidates are built for the test clicks only "
                          "(use --split test, or --protocol sampled)")
    p = load_stage(params, PARAMS, (TenrecParams, RankingParams, RankingEvalParams), CHECKS)
    for f in (Path(prepared) / SEQ_FILE, Path(prepared) / ITEMS_FILE):
        if not f.is_file():
            raise DataError(f, "missing", expected="tenrec_prepare's output (--prepared)")
    s = load_sequences(Path(prepared))
    ranker = rk.load_ranker_dir(model, s)
    sp = split_users(s, p.tenrec.min_clicks)
    cands = None
    if protocol == "retrieved":
        if not Path(candidates).is_file():
            raise DataError(candidates, "missing", expected="tenrec_build_index's candidates.npz (--candidates)")
        cands = rk.load_candidates(candidates, sp, p.ranking_eval.rerank_k)
    rp = p.ranking
    cs = rk.candidate_set(s, sp, split, protocol, n_neg=rp.sampled_negatives, n_users=rp.eval_users,
                          max_len=ranker.max_len, seed=p.seed, candidates=cands)
    world = load_world(raw)
    try:
        run = rk.score_set(ranker, s, cs, rp.eval_batch_size, world)
    except KeyError as e:
        raise DataError(Path(raw) / WORLD, f"not the world of this prepared data ({e.args[0]})",
                        expected="the raw folder the prepared data was made from (--raw)") from None
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    with atomic_outputs() as o:
        rows = rk.write_predictions(o.file(out), s, run)
    log.info("%s on the %s clicks: %d users, %d (user, candidate) rows -> %s", cs.protocol, split, len(cs), rows, out)
