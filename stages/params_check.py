"""``recdag params check``: every section of params.yaml validates, and no top-level key is unclaimed.

A tool, not a DVC stage (each stage validates only the sections it declares): the logic is
:mod:`pipeline.params`.
"""

from __future__ import annotations

import typer

from pipeline.core.errors import ConfigError

app = typer.Typer(no_args_is_help=True, add_completion=False, help="Validate params.yaml as a whole.")


@app.callback()
def _group() -> None:
    """Validate params.yaml as a whole."""


@app.command("check")
def check(params: str = typer.Option("params.yaml", "--params", help="params file")) -> None:
    """Validate every section (exit 2, one line naming the key, on the first problem)."""
    from pipeline.params import load_everything, section_classes, unclaimed_keys

    names = [cls.SECTION for cls in section_classes()]
    unclaimed = unclaimed_keys(params)
    if unclaimed:
        raise ConfigError(f"{unclaimed[0]}: unknown top-level key in {params} (known: seed, {', '.join(names)})")
    load_everything(params)
    typer.echo(f"params check: {params} valid (seed + {len(names)} sections: {', '.join(names)})")
