"""The Tenrec branch: one module per DVC stage, registered on one typer sub-app."""

import typer

from stages.tenrec import (build_index, download, encoder_scaling, evaluate, prepare, train_ranking,
                           train_retrieval)

app = typer.Typer(no_args_is_help=True, help="Tenrec branch: two-tower retrieval -> FAISS -> Fastformer ranking.")
app.command("download")(download.download)
app.command("prepare")(prepare.prepare)
app.command("train-retrieval")(train_retrieval.train_retrieval)
app.command("build-index")(build_index.build_index)
app.command("train-ranking")(train_ranking.train_ranking)
app.command("evaluate")(evaluate.evaluate)
app.command("encoder-scaling")(encoder_scaling.encoder_scaling)
