"""Bad input that every branch meets through the shared core: broken intermediate parquet / JSON, a stage run
before its upstream, bad resume checkpoints, two concurrent runs of one training stage, temp leftovers of
killed runs, and the CLI's one-line contract (``--debug`` shows the traceback). Each case: exit code 2,
exactly one ``error:`` line naming the file (and field where there is one), no new files left behind."""

from __future__ import annotations

import os
import pickle
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from pipeline.core.io import clean_stale_tmp
from pipeline.core.train import checkpoint_lock
from tests.conftest import ROOT, leftovers, run_cli, set_params

ENC = Path("data/avazu/encoded")
VOCAB = Path("data/avazu/vocab")
NORM = Path("data/avazu/interim/base/normalized/x4")
CKPT = Path("models/.ckpt")
X4_ONLY = {"avazu.sources": ["x4"], "avazu.split_valid.sources": [], "avazu.sample.sources": [],
           "train.epochs": 1, "train.batch_size": 512, "train.checkpoint_every_steps": 2, "ctr.hidden_units": [16]}


@pytest.fixture(scope="module")
def built(tmp_path_factory, tiny_raw):
    """An x4-only project normalized and encoded (vocab), shared read-only by the tests of this module."""
    root = tmp_path_factory.mktemp("core_bad")
    shutil.copy(ROOT / "params.yaml", root / "params.yaml")
    (root / "conf").mkdir()
    shutil.copy(ROOT / "conf" / "avazu_layouts.yaml", root / "conf" / "avazu_layouts.yaml")
    set_params(root, **X4_ONLY)
    shutil.copytree(tiny_raw / "x4", root / "data/avazu/raw/x4")
    cwd = os.getcwd()
    os.chdir(root)
    try:
        assert run_cli("avazu", "normalize", "x4") == 0
        assert run_cli("avazu", "vocab") == 0
    finally:
        os.chdir(cwd)
    return root


@pytest.fixture
def proj(built, tmp_path, monkeypatch):
    root = tmp_path / "p"
    shutil.copytree(built, root)
    monkeypatch.chdir(root)
    return root


def _files(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*") if p.is_file()}


def _fail(capsys, args, needles, root: Path, allowed_new=()):
    before = _files(root)
    capsys.readouterr()
    code = run_cli(*args)
    err = capsys.readouterr().err
    assert code == 2, err
    lines = [l for l in err.splitlines() if l.strip()]
    assert sum(l.startswith("error:") for l in lines) == 1, err
    assert "Traceback" not in err, err
    for n in needles:
        assert n in err, (n, err)
    new = {f for f in _files(root) - before
           if not any(f.startswith(a) for a in allowed_new) and not f.endswith("/.lock")}   # a run's lock file
    assert not new, new
    assert not leftovers(root), leftovers(root)
    return err


# ------------------------------------------------------------------ intermediate files and missing upstream

def test_zero_byte_intermediate_parquet_into_vocab(proj, capsys):
    (NORM / "train.parquet").write_bytes(b"")
    shutil.rmtree(VOCAB)
    _fail(capsys, ["avazu", "vocab"], [str(NORM / "train.parquet"), "not a readable parquet file"], proj)


def test_truncated_intermediate_parquet_into_vocab(proj, capsys):
    p = NORM / "train.parquet"
    p.write_bytes(p.read_bytes()[: p.stat().st_size // 2])
    shutil.rmtree(VOCAB)
    _fail(capsys, ["avazu", "vocab"], [str(p), "not a readable parquet file"], proj)


def test_schema_broken_encoded_parquet_into_train_baseline(proj, capsys):
    import pyarrow as pa
    import pyarrow.parquet as pq

    p = ENC / "x4" / "train.parquet"
    pq.write_table(pa.table({"something_else": [1, 2, 3]}), p)
    _fail(capsys, ["avazu", "train-baseline"], [str(p), "missing column"], proj)


@pytest.mark.parametrize("content, needle", [("", "file is empty"), ('{"fields": [', "not valid JSON"),
                                             ("\xff\xfe", "not UTF-8")])
def test_broken_feature_map_into_train_baseline(proj, capsys, content, needle):
    fmap = VOCAB / "feature_map.json"
    fmap.write_bytes(content.encode("latin-1"))
    _fail(capsys, ["avazu", "train-baseline"], [str(fmap), needle], proj)


def test_stage_run_before_its_upstream(proj, capsys):
    shutil.rmtree("data/avazu/interim")
    shutil.rmtree(VOCAB)
    _fail(capsys, ["avazu", "vocab"], ["data/avazu/interim", "not found"], proj)


# ------------------------------------------------------------------ checkpoints

def _killed_run(proj, monkeypatch) -> Path:
    """A run whose process died before clean-up: train once with the clean-up disabled, so
    models/.ckpt/<run>/last.pt stays behind, then drop the run's outputs."""
    from contextlib import contextmanager

    from pipeline.core import train as core_train

    @contextmanager
    def keep(root, name, *parts):
        yield Path(root) / f"{name}-{core_train.run_key(*parts)}"

    with monkeypatch.context() as m:
        m.setattr(core_train, "resumable", keep)
        assert run_cli("avazu", "train-baseline") == 0
    for out in ("models/avazu", "reports"):
        shutil.rmtree(out, ignore_errors=True)
    (run,) = [p for p in CKPT.iterdir() if p.is_dir()]
    assert (run / "last.pt").is_file()
    return run


@pytest.mark.parametrize("damage, needle", [
    ("empty", "checkpoint file is empty (0 bytes)"),
    ("truncated", "truncated or not a torch file"),
    ("pickle", "objects other than tensors"),
    ("foreign", "checkpoint does not fit this run"),
])
def test_bad_resume_checkpoint(proj, capsys, monkeypatch, damage, needle):
    run = _killed_run(proj, monkeypatch)
    last = run / "last.pt"
    if damage == "empty":
        last.write_bytes(b"")
    elif damage == "truncated":
        last.write_bytes(last.read_bytes()[:200])
    elif damage == "pickle":
        class Evil:                                           # what a crafted checkpoint would smuggle in
            def __reduce__(self):
                return (print, ("pwned",))
        torch.save({"model": Evil()}, last, pickle_protocol=pickle.DEFAULT_PROTOCOL)
    else:
        torch.save({"model": {"w": torch.zeros(2)}, "rule": {}, "state": {}, "rng": torch.get_rng_state()}, last)
    err = _fail(capsys, ["avazu", "train-baseline"], [str(last), needle, "recdag clean-checkpoints", str(run)],
                proj)
    assert "weights_only=False" not in err and "pwned" not in err
    assert not (Path("models/avazu/baseline")).exists()
    # the documented way out: clean-checkpoints, then the run starts afresh and succeeds
    assert run_cli("clean-checkpoints") == 0
    assert not run.exists()
    assert run_cli("avazu", "train-baseline") == 0, capsys.readouterr().err


def test_second_concurrent_training_run_fails_with_one_line(proj, capsys, monkeypatch):
    run = _killed_run(proj, monkeypatch)
    with checkpoint_lock(run):                       # another live run holds the folder
        err = _fail(capsys, ["avazu", "train-baseline"], [str(run), "in use by another run", str(os.getpid())], proj)
        assert run_cli("clean-checkpoints") == 0     # a held folder is never removed
        assert run.is_dir()
    assert "in use" in err
    assert run_cli("avazu", "train-baseline") == 0, capsys.readouterr().err
    assert not run.exists()                          # a finished run removes its resume point


# ------------------------------------------------------------------ temp leftovers of killed runs

def test_stale_temp_dirs_of_dead_processes_are_removed(proj, capsys):
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                          text=True).stdout.strip()
    stale = NORM.parent / f".x4.tmp-{dead}-deadbeef"
    stale.mkdir()
    (stale / "train.parquet").write_bytes(b"half")
    live = NORM.parent / f".x4.tmp-{os.getpid()}-0badf00d"   # a live process's temp: left alone
    live.mkdir()
    assert run_cli("avazu", "normalize", "x4") == 0
    assert not stale.exists() and live.exists()
    assert clean_stale_tmp(NORM.parent) == []
    shutil.rmtree(live)


def test_temp_outputs_are_ignored_by_dvc():
    assert ".*.tmp-*" in (ROOT / ".dvcignore").read_text().split()


# ------------------------------------------------------------------ the CLI contract

def test_debug_flag_shows_the_traceback(proj, capsys):
    (NORM / "train.parquet").write_bytes(b"")
    shutil.rmtree(VOCAB)
    env = dict(os.environ, PYTHONPATH=str(ROOT), TQDM_DISABLE="1")
    plain = subprocess.run([sys.executable, "-m", "stages.cli", "avazu", "vocab"], capture_output=True, text=True,
                           env=env)
    assert plain.returncode == 2 and "Traceback" not in plain.stderr and "error:" in plain.stderr
    debug = subprocess.run([sys.executable, "-m", "stages.cli", "--debug", "avazu", "vocab"], capture_output=True,
                           text=True, env=env)
    assert debug.returncode == 1 and "Traceback" in debug.stderr and "DataError" in debug.stderr
    env["RECDAG_DEBUG"] = "1"
    via_env = subprocess.run([sys.executable, "-m", "stages.cli", "avazu", "vocab"], capture_output=True,
                             text=True, env=env)
    assert via_env.returncode == 1 and "Traceback" in via_env.stderr


def test_programming_errors_keep_their_traceback():
    from stages.cli import bad_input_message

    assert bad_input_message(ZeroDivisionError("x")) is None
    assert bad_input_message(KeyError("x")) is None
    assert "not found" in bad_input_message(FileNotFoundError(2, "No such file", "data/x.parquet"))
