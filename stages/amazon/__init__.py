"""The amazon branch: one module per DVC stage, registered on one typer sub-app."""

import typer

from stages.amazon import download, etl, finetune, plots, pretrain

app = typer.Typer(no_args_is_help=True, help="Amazon scaling branch.")
app.command("download")(download.download)
app.command("etl")(etl.run_etl)
app.command("pretrain")(pretrain.pretrain)
app.command("finetune")(finetune.finetune)
app.command("plots")(plots.plots)
