"""The ``recdag`` command: one typer sub-command per DVC stage (``recdag <branch> <stage>``)."""

from __future__ import annotations

import logging
import sys

import typer

from pipeline.core.errors import RecdagError
from stages import amazon, avazu, tenrec
from stages.check_metrics import check_metrics
from stages.report import report

app = typer.Typer(no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False,
                  help="recdag: the reproducible recsys pipeline. Stages are run by `dvc repro`.")
app.add_typer(avazu.app, name="avazu")
app.add_typer(tenrec.app, name="tenrec")
app.add_typer(amazon.app, name="amazon")
app.command("check-metrics")(check_metrics)
app.command("report")(report)


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        app()
    except RecdagError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
