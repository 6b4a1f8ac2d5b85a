"""Stage helen_sharpness (studies/helen/dvc.yaml): Helen's premise measured — the top Hessian eigenvalue of
feature values' embeddings against their training frequency, for MODEL's Adam / SAM / Helen study runs (the
paper's Figure 1 made on the user's data; :mod:`pipeline.ctr.sharpness` holds the definition)."""

from __future__ import annotations

import logging

import typer

from pipeline.core.io import atomic_outputs, write_json
from pipeline.core.params import load_stage
from pipeline.ctr.params import TrainParams
from pipeline.ctr.study import HelenStudyParams
from stages.avazu.common import ENCODED, VOCAB, ParamsOpt
from stages.studies.common import HELEN_MODELS, HELEN_REPORTS

log = logging.getLogger(__name__)

PARAMS = ("seed", "train.sources", "helen_study.train_rows", "helen_study.sharpness")


def helen_sharpness(model: str = typer.Argument(..., help="whose adam / sam / helen study runs are measured"),
                    params: str = ParamsOpt) -> None:
    """λmax by training frequency on the study's training sample (the rows those runs trained on)."""
    from pipeline.ctr import sharpness, study
    from pipeline.ctr.data import EncodedAvazu
    from pipeline.ctr.models import load_model_dir

    p = load_stage(params, PARAMS, (TrainParams, HelenStudyParams))
    enc = EncodedAvazu(VOCAB, ENCODED)
    enc.require("train.sources", p.train.sources, ("train",))
    data = enc.tensors(p.train.sources, "train").subsample(p.helen_study.train_rows, p.seed)
    models = {o: load_model_dir(HELEN_MODELS / study.run_name(model, o), enc.features, enc.vocab_sizes)
              for o in study.STUDY_OPTIMIZERS}
    s = p.helen_study.sharpness
    report = sharpness.sharpness_by_frequency(models, data, bins=s.bins, values_per_bin=s.values_per_bin,
                                              max_rows_per_value=s.max_rows_per_value, iters=s.iters,
                                              seed=p.seed)
    kind = "synthetic" if data.oracle is not None else "real"
    report = {"dataset": f"avazu ({', '.join(p.train.sources)}; {kind}; the study's {len(data):,} train rows)",
              "split": "train (the rows the study runs trained on)",
              "protocol": "top Hessian eigenvalue per feature-value embedding, by training frequency",
              "synthetic": kind == "synthetic", "model": model, **report}
    with atomic_outputs() as out:
        write_json(out.file(HELEN_REPORTS / "sharpness.json"), report)
        out.file(HELEN_REPORTS / "sharpness.png").write_bytes(sharpness.sharpness_figure(report))
