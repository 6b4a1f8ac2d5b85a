"""``recdag avazu predict``: score a dataset with a trained Avazu model (a tool, not a DVC stage).

The model is a CTR model folder (models/avazu/baseline, or a study run's) or an LLM-CTR phase folder
(models/avazu/llm_phase<n>[-seed], with the baseline and the LLM it was trained with). The data is an
encoded split (data/avazu/encoded/<source>/<split>.parquet) or, with ``--layout``, a raw CSV in one of the
declared layouts, normalized and encoded by the pipeline's own code with the model's vocabulary. The output
is one parquet (row, [id], label, logit, p, [p_oracle]); see pipeline/ctr/predict.py.
"""

from __future__ import annotations

import logging
from pathlib import Path

import typer

from stages.avazu.common import BASELINE_DIR, LLM_DIR, VOCAB

log = logging.getLogger(__name__)


def predict(
    data: Path = typer.Argument(..., help="an encoded split (data/avazu/encoded/<source>/<split>.parquet), or a "
                                          "raw CSV when --layout is given"),
    out: Path = typer.Option(..., "--out", help="the prediction parquet to write (row, [id], label, logit, p, "
                                                "[p_oracle]); written atomically"),
    model: Path = typer.Option(BASELINE_DIR, "--model", help="a trained model folder: models/avazu/baseline "
                                                             "(any zoo model) or models/avazu/llm_phase<n>[-seed]"),
    layout: str = typer.Option("", "--layout", help="DATA is a raw CSV in this declared layout (x1 | x2 | x4 "
                                                    "of conf/avazu_layouts.yaml), label column included"),
    feature_map: Path = typer.Option(VOCAB / "feature_map.json", "--feature-map",
                                     help="the vocabulary the model was trained on (vocab.parquet beside it)"),
    baseline: Path = typer.Option(BASELINE_DIR, "--baseline", help="LLM-CTR only: the baseline it was trained on"),
    llm: Path = typer.Option(LLM_DIR, "--llm", help="LLM-CTR only: the LLM folder it was trained with"),
    layouts_file: Path = typer.Option(Path("conf/avazu_layouts.yaml"), "--layouts", help="the declared layouts"),
    batch_rows: int = typer.Option(65536, "--batch-rows", min=1, help="rows per streamed batch"),
    batch_size: int = typer.Option(8192, "--batch-size", min=1, help="rows per forward pass"),
    device: str = typer.Option("cpu", "--device", help="cpu | cuda | auto"),
) -> None:
    """Score DATA with a trained model and write its click logits and probabilities to --out."""
    from pipeline.core.errors import ConfigError
    from pipeline.core.io import atomic_outputs
    from pipeline.ctr.predict import load_predictor, predict_encoded, predict_raw_csv

    if device not in ("cpu", "cuda", "auto"):
        raise ConfigError(f"--device: '{device}' is not one of cpu, cuda, auto")
    pred = load_predictor(model, feature_map, baseline_dir=baseline, llm_dir=llm, device=device,
                          batch_size=batch_size)
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    with atomic_outputs() as o:
        dst = o.file(out)
        if layout:
            from pipeline.ctr.schema import load_layouts

            layouts = load_layouts(layouts_file)
            summary = predict_raw_csv(pred, data, layouts[layout], layouts.fields, feature_map.parent / "vocab.parquet",
                                      dst, batch_rows)
        else:
            summary = predict_encoded(pred, data, dst)
    log.info("%s on %s: %s -> %s", pred.kind, data, {k: v for k, v in summary.items() if k != "oov_share"}, out)
    if "oov_share" in summary:
        log.info("out-of-vocabulary share of the CSV's tokens: %.2f%%", 100 * summary["oov_share"]["all_fields"])
