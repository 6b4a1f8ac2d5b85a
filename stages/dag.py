"""``recdag dag check`` / ``recdag dag write``: dvc.yaml's code deps and params against each stage's module.

A tool, not a DVC stage: the logic is :mod:`pipeline.dag` (import closure, ``PARAMS``, the rewrite).
"""

from __future__ import annotations

import typer

from pipeline import dag

app = typer.Typer(no_args_is_help=True, add_completion=False,
                  help="dvc.yaml is exact: each stage's code deps = its module's import closure, params = PARAMS.")

DvcYamlOpt = typer.Option("dvc.yaml", "--dvc-yaml", help="the pipeline file")


def _n(count: int, noun: str) -> str:
    return f"{count} {noun}{'' if count == 1 else 's'}"


@app.callback()
def _group() -> None:
    """Check or rewrite dvc.yaml's code deps and params."""


@app.command("check")
def check(dvc_yaml: str = DvcYamlOpt) -> None:
    """One line per drift (`<stage>: missing dep <file>` ...); exit 1 on any."""
    d, drifts = dag.check(dvc_yaml)
    for drift in drifts:
        typer.echo(str(drift))
    if drifts:
        stages = len({x.stage for x in drifts})
        typer.echo(f"dag check: {_n(len(drifts), 'drift')} in {stages} of {_n(len(d.stages), 'stage')} "
                   f"(`recdag dag write --dvc-yaml {dvc_yaml}` fixes them)", err=True)
        raise typer.Exit(1)
    typer.echo(f"dag check: {len(d.stages)} stages, all exact")


@app.command("write")
def write(dvc_yaml: str = DvcYamlOpt) -> None:
    """Rewrite dvc.yaml so every stage's code deps and params are exact; print what changed."""
    changed = dag.write(dvc_yaml)
    for line in changed:
        typer.echo(line)
    if changed:
        stages = len({c.split(":")[0] for c in changed})
        typer.echo(f"dag write: {dvc_yaml} rewritten ({_n(stages, 'stage')} changed)")
    else:
        typer.echo(f"dag write: {dvc_yaml} already exact, left unchanged")
