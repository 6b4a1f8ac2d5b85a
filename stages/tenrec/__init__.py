"""The tenrec branch: one module per DVC stage, registered on one typer sub-app."""

import typer

app = typer.Typer(no_args_is_help=True, help="tenrec branch.")
