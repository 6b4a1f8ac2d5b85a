"""The ``recdag`` command: one typer sub-command per DVC stage (``recdag <branch> <stage>``), plus tools.

``COMMANDS`` is the one registry: branch -> command -> ``"module:function"`` (a ``:app`` target is a typer
sub-app). Running a stage imports **only that stage's module** (and what it imports), so the code a stage
runs is exactly the import closure of its module — what ``recdag dag check`` compares with dvc.yaml's
``deps``. This dispatcher itself changes no output (it maps a command to its function and turns a
:class:`RecdagError` into one line and exit code 2), so it is not a dependency of any stage.

Bad input never shows a Python traceback: a :class:`RecdagError` (the readers' DataError, params'
ConfigError) and, as a safety net, the library errors that only bad or missing files raise (a missing
upstream file, an unreadable parquet / gzip / JSON / UTF-8 input) are printed as one ``error: …`` line with
exit code 2. ``recdag --debug …`` or ``RECDAG_DEBUG=1`` shows the traceback instead. Programming errors
(anything else) keep their traceback and exit code 1.
"""

from __future__ import annotations

import importlib
import logging
import os
import sys

import typer

from pipeline.core.errors import RecdagError

BRANCH_HELP = {
    "avazu": "Avazu / LLM-CTR branch.",
    "tenrec": "Tenrec branch: two-tower retrieval -> FAISS -> Fastformer ranking.",
    "amazon": "Amazon scaling branch: scaled pretraining sets -> transformer pretraining -> fine-tuning.",
    "studies": "Study pipelines (studies/<name>/dvc.yaml): heavier reproductions over the same library.",
}

COMMANDS: dict[str, dict[str, str]] = {
    "avazu": {
        "download": "stages.avazu.download:download",
        "normalize": "stages.avazu.normalize:normalize",
        "align": "stages.avazu.align:align",
        "split-valid": "stages.avazu.split_valid:split_valid",
        "sample": "stages.avazu.sample:sample",
        "vocab": "stages.avazu.vocab:vocab",
        "leakage": "stages.avazu.leakage:leakage",
        "train-baseline": "stages.avazu.train_baseline:train_baseline",
        "llm-init": "stages.avazu.llm_init:llm_init",
        "llm-phase": "stages.avazu.llm_phase:llm_phase",
        "evaluate-x4": "stages.avazu.evaluate_x4:evaluate_x4",
        "predict": "stages.avazu.predict:predict",
    },
    "tenrec": {
        "download": "stages.tenrec.download:download",
        "prepare": "stages.tenrec.prepare:prepare",
        "train-retrieval": "stages.tenrec.train_retrieval:train_retrieval",
        "build-index": "stages.tenrec.build_index:build_index",
        "train-ranking": "stages.tenrec.train_ranking:train_ranking",
        "evaluate": "stages.tenrec.evaluate:evaluate",
        "encoder-scaling": "stages.tenrec.encoder_scaling:encoder_scaling",
        "predict": "stages.tenrec.predict:predict",
    },
    "amazon": {
        "download": "stages.amazon.download:download",
        "etl": "stages.amazon.etl:etl",
        "pretrain": "stages.amazon.pretrain:pretrain",
        "finetune": "stages.amazon.finetune:finetune",
        "plots": "stages.amazon.plots:plots",
    },
    "studies": {
        "helen-optimizers": "stages.studies.helen_optimizers:helen_optimizers",
        "helen-run": "stages.studies.helen_run:helen_run",
        "helen-table": "stages.studies.helen_table:helen_table",
        "helen-sharpness": "stages.studies.helen_sharpness:helen_sharpness",
        "amazon-pretrain": "stages.studies.amazon_pretrain:amazon_pretrain",
        "amazon-transfer": "stages.studies.amazon_transfer:amazon_transfer",
        "amazon-scaling": "stages.studies.amazon_scaling:amazon_scaling",
        "amazon-table": "stages.studies.amazon_table:amazon_table",
        "llm-init": "stages.studies.llm_init:llm_init",
        "llm-run": "stages.studies.llm_run:llm_run",
        "llm-table": "stages.studies.llm_table:llm_table",
    },
    "": {                                                   # top-level commands
        "report": "stages.report:report",
        "check-metrics": "stages.check_metrics:check_metrics",
        "sweep": "stages.sweep:sweep",
        "dag": "stages.dag:app",
        "params": "stages.params_check:app",
        "clean-checkpoints": "stages.clean_checkpoints:clean_checkpoints",
    },
}


def resolve(target: str):
    module, _, attr = target.partition(":")
    return getattr(importlib.import_module(module), attr)


def _register(app: typer.Typer, name: str, target: str) -> None:
    obj = resolve(target)
    if isinstance(obj, typer.Typer):
        app.add_typer(obj, name=name)
    else:
        app.command(name)(obj)


def build_app(argv: list[str] | None = None) -> typer.Typer:
    """The typer app; when ``argv`` names one registered stage, only that stage's module is imported."""
    app = typer.Typer(no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False,
                      help="recdag: the reproducible recsys pipeline. Stages are run by `dvc repro`.")
    argv = list(argv or [])
    if len(argv) >= 2 and argv[0] in BRANCH_HELP and argv[1] in COMMANDS[argv[0]]:
        branch_names = {argv[0]: [argv[1]]}
        top_names: list[str] = []
    elif argv and argv[0] in COMMANDS[""]:
        branch_names, top_names = {}, [argv[0]]
    else:
        branch_names = {b: list(COMMANDS[b]) for b in BRANCH_HELP}
        top_names = list(COMMANDS[""])
    for branch, names in branch_names.items():
        sub = typer.Typer(no_args_is_help=True, help=BRANCH_HELP[branch])
        for name in names:
            _register(sub, name, COMMANDS[branch][name])
        if len(names) == 1:          # keep `recdag <branch> <stage>` a group with one command
            sub.callback()(lambda: None)
        app.add_typer(sub, name=branch)
    for name in top_names:
        _register(app, name, COMMANDS[""][name])
    if len(top_names) == 1 and not branch_names:
        app.callback()(lambda: None)
    return app


def bad_input_message(e: BaseException) -> str | None:
    """One line for an exception that only bad or missing input raises; None for anything else."""
    import gzip
    import json
    import zlib

    if isinstance(e, RecdagError):
        return str(e)
    name = getattr(e, "filename", None)
    if isinstance(e, FileNotFoundError) and name:
        return f"{name}: not found (expected the output of its upstream stage: run `dvc repro`, or check the path)"
    if isinstance(e, (PermissionError, IsADirectoryError, NotADirectoryError)) and name:
        return f"{name}: {e.strerror}"
    if isinstance(e, json.JSONDecodeError):
        return f"invalid JSON input, row {e.lineno}: {e.msg} (expected a JSON file written by an upstream stage)"
    if isinstance(e, UnicodeDecodeError):
        return f"input is not UTF-8 text (byte {e.start}: {e.reason}) (expected UTF-8 CSV / JSON text)"
    if isinstance(e, (gzip.BadGzipFile, zlib.error)):
        return f"input is not a complete gzip stream ({e}) (expected a .gz file written in full)"
    try:
        import pyarrow as pa
    except ImportError:                                   # pragma: no cover - pyarrow is a dependency
        return None
    if isinstance(e, pa.ArrowException):
        first = (str(e).splitlines() or [type(e).__name__])[0]
        return f"input file not readable ({first}) (expected the parquet / CSV written by its stage: re-run it)"
    return None


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    argv = sys.argv[1:]
    debug = os.environ.get("RECDAG_DEBUG", "") not in ("", "0")
    if "--debug" in argv[:1]:
        debug, argv = True, argv[1:]
    import click

    try:
        code = build_app(argv)(args=argv, prog_name="recdag", standalone_mode=False)
    except click.exceptions.Exit as e:
        code = e.exit_code
    except click.ClickException as e:                 # usage errors: click's own message and exit code
        e.show()
        code = e.exit_code
    except click.exceptions.Abort as e:               # click turns EOFError / Ctrl-C into Abort
        cause = e.__cause__ if isinstance(e.__cause__, EOFError) else None
        if cause is None or debug:
            if debug and cause is not None:
                raise cause
            print("Aborted!", file=sys.stderr)
            sys.exit(1)
        print(f"error: input ended early (a truncated file: {cause or 'EOFError'})", file=sys.stderr)
        sys.exit(2)
    except Exception as e:
        msg = bad_input_message(e)
        if msg is None or debug:
            raise
        print(f"error: {msg}", file=sys.stderr)
        sys.exit(2)
    sys.exit(code if isinstance(code, int) else 0)


if __name__ == "__main__":
    main()
