"""The Avazu / LLM-CTR branch: one module per DVC stage, registered on one typer sub-app."""

import typer

from stages.avazu import compare_optimizers, download, normalize, sample, split_valid, train_baseline, vocab
from stages.avazu import evaluate_x4, llm_init, llm_phase

app = typer.Typer(no_args_is_help=True, help="Avazu / LLM-CTR branch.")
app.command("download")(download.download)
app.command("normalize")(normalize.normalize)
app.command("split-valid")(split_valid.split_valid)
app.command("sample")(sample.sample)
app.command("vocab")(vocab.vocab)
app.command("train-baseline")(train_baseline.train_baseline)
app.command("compare-optimizers")(compare_optimizers.compare_optimizers)
app.command("llm-init")(llm_init.llm_init)
app.command("llm-phase")(llm_phase.llm_phase)
app.command("evaluate-x4")(evaluate_x4.evaluate_x4)
