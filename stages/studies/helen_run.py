"""Stage helen_run / helen_rho (studies/helen/dvc.yaml): one cell of the Helen study — ``MODEL`` trained
with ``OPTIMIZER`` (optionally Helen at another ``--rho`` / ``--variant``) on the study's smaller world."""

from __future__ import annotations

import dataclasses
import logging
from typing import Optional

import typer

from pipeline.core.io import atomic_outputs, write_json
from pipeline.core.params import load_stage
from pipeline.ctr.models import CtrParams
from pipeline.ctr.params import OptimParams, TrainParams
from pipeline.ctr.study import HelenStudyParams
from stages.avazu.common import CKPT, ENCODED, TB, VOCAB, ParamsOpt
from stages.studies.common import HELEN_MODELS, HELEN_RUNS

log = logging.getLogger(__name__)

PARAMS = ("seed", "ctr", "optim", "train", "helen_study.train_rows", "helen_study.epochs")


def helen_run(model: str = typer.Argument(..., help="dnn | widedeep | pnn | deepfm | dcn | dlrm | dcnv2"),
              optimizer: str = typer.Argument(..., help="adam | sam | helen"), params: str = ParamsOpt,
              rho: Optional[float] = typer.Option(None, "--rho", help="Helen's rho (default: optim.rho)"),
              variant: Optional[str] = typer.Option(None, "--variant", help="release | recdag (default: "
                                                    "optim.helen_variant)")) -> None:
    """Train MODEL with OPTIMIZER (adam | sam | helen) on a seeded sample of helen_study.train_rows rows of
    train.sources' train split for helen_study.epochs epochs; every other knob from ctr / optim / train.
    --rho / --variant (Helen only) override optim.rho / optim.helen_variant for the rho grid."""
    import torch

    from pipeline.core.io import md5_file
    from pipeline.core.train import init_distributed, resumable
    from pipeline.ctr import baseline as bl
    from pipeline.ctr import study
    from pipeline.ctr.data import EncodedAvazu
    from pipeline.core.errors import ConfigError

    p = load_stage(params, PARAMS, (CtrParams, OptimParams, TrainParams, HelenStudyParams))
    if optimizer not in study.STUDY_OPTIMIZERS:
        raise ConfigError(f"helen-run: optimizer '{optimizer}' is not one of {list(study.STUDY_OPTIMIZERS)}")
    if (rho is not None or variant is not None) and optimizer != "helen":
        raise ConfigError("helen-run: --rho / --variant are Helen's (optimizer 'helen')")
    ctr = p.ctr.with_model(model)
    changes = {"name": optimizer}
    if rho is not None:
        changes["rho"] = rho
    if variant is not None:
        changes["helen_variant"] = variant
    opt = dataclasses.replace(p.optim, **changes)
    OptimParams.validate(opt)
    train = dataclasses.replace(p.train, epochs=p.helen_study.epochs)
    name = study.run_name(model, optimizer, rho, variant)
    rank, world = init_distributed()
    enc = EncodedAvazu(VOCAB, ENCODED)
    rows = p.helen_study.train_rows
    with resumable(CKPT, f"study-helen-{name}", p.seed, ctr, opt, train, rows, md5_file(enc.fmap_path),
                   world) as ckpt:
        fit = bl.fit_ctr(p.seed, ctr, opt, train, enc, ckpt_dir=ckpt, tb_dir=TB / "studies" / "helen" / name,
                         train_rows=rows)
        record = study.run_record(fit, enc, list(train.sources), name=name, model=model, optimizer=optimizer,
                                  rho=opt.rho, variant=opt.helen_variant, train_rows=rows, epochs=train.epochs,
                                  protocol=bl.PROTOCOL)
        if rank != 0:
            return
        state, config, _ = bl.baseline_files(fit, enc, train)
        config["study"] = {"run": name, "train_rows": rows, "optimizer": optimizer, "rho": opt.rho,
                           "helen_variant": opt.helen_variant}
        with atomic_outputs() as out:
            d = out.dir(HELEN_MODELS / name)
            torch.save(state, d / "model.pt")
            write_json(d / "config.json", config)
            write_json(out.file(HELEN_RUNS / f"{name}.json"), record)
    log.info("study run %s: %s test AUC %.5f", name, record["headline_split"],
             record["test"][train.sources[0]]["auc"])
