"""``recdag check-metrics``: fresh metrics (working tree) against the pinned ones (a git revision)."""

from __future__ import annotations

import typer

from pipeline.core.errors import RecdagError


def check_metrics(rev: str = typer.Option("HEAD", help="git revision holding the pinned metrics"),
                  rules: str = typer.Option("conf/check_metrics.yaml", help="tolerances and ignored keys"),
                  show_all: bool = typer.Option(False, "--all", help="list every metric, not only drifted ones"),
                  ) -> None:
    """Compare every DVC-declared metric with its pinned value; exit 1 on drift, with a table of differences."""
    from pipeline.core.pins import PinRules, compare, dvc_metrics_diff, format_table

    rows = compare(dvc_metrics_diff(rev), PinRules.load(rules))
    if not rows:
        raise RecdagError(f"no metrics found to compare against {rev} (run `dvc repro` first?)")
    typer.echo(format_table(rows, show_all=show_all))
    if any(r.status == "drift" for r in rows):
        typer.echo(f"check-metrics: fresh metrics drifted from the ones pinned at {rev}", err=True)
        raise typer.Exit(1)
    typer.echo(f"check-metrics: every metric matches the pin at {rev}")
