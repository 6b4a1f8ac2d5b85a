"""``recdag sweep``: the experiments of HEAD (``dvc exp show --json``) as a table and a figure of a metric
against the swept param(s). A tool, not a DVC stage: the logic is :mod:`pipeline.sweep`."""

from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import Optional

import typer

from pipeline.core.errors import ConfigError
from pipeline.core.io import atomic_outputs, write_json
from pipeline import sweep as sw           # light: matplotlib is imported only when the figure is drawn
from pipeline.sweep import DEFAULT_METRIC

log = logging.getLogger(__name__)


def sweep(param: list[str] = typer.Option(..., "--param", help="swept param as DVC shows it (optim.rho); "
                                          "repeat for a second one (one line per value)"),
          metric: Optional[list[str]] = typer.Option(None, "--metric", help="<metrics file>:<dotted.key>; "
                                                     "repeatable", show_default=DEFAULT_METRIC),
          out: str = typer.Option("reports/sweeps", "--out", help="folder of the outputs"),
          name: Optional[str] = typer.Option(None, "--name", help="output base name",
                                             show_default="sweep_<param, dots as _>"),
          from_json: Optional[str] = typer.Option(None, "--from-json",
                                                  help="a saved `dvc exp show --json` instead of running it"),
          all_commits: bool = typer.Option(False, "--all-commits", help="experiments of every commit, "
                                           "not only HEAD's"),
          ) -> None:
    """Write <out>/<name>.json, .md (table sorted by the param) and .png (metric vs param) of a DVC sweep."""
    if name is not None and not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", name):
        raise ConfigError(f"--name {name!r} must be a plain file name (letters, digits, '.', '_', '-')")
    exp_show = sw.read_exp_show(from_json) if from_json else sw.run_exp_show(all_commits=all_commits)
    report = sw.build(exp_show, param, metric, name=name, all_commits=all_commits)
    root = Path(out)
    with atomic_outputs() as outs:
        write_json(outs.file(root / f"{report['name']}.json"), report)
        outs.file(root / f"{report['name']}.md").write_text(sw.render_markdown(report), encoding="utf-8")
        outs.file(root / f"{report['name']}.png").write_bytes(sw.sweep_figure(report))
    log.info("sweep: %d rows -> %s.{json,md,png}", len(report["rows"]), root / report["name"])
    typer.echo(sw.render_markdown(report))
