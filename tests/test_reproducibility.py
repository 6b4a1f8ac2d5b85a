"""Reproducibility: the same params give the same outputs twice, and a training stage killed with SIGKILL
mid-epoch resumes to the same final metrics as an uninterrupted run, leaving no half-written outs."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from tests.conftest import LAYOUTS, ROOT, leftovers, set_params

pytestmark = pytest.mark.slow

SMALL = {"avazu.sources": ["x4"], "avazu.split_valid.sources": [], "avazu.sample.sources": [],
         "train.sources": ["x4"], "avazu.synthetic.rows": 20_000, "ctr.embedding_dim": 8,
         "ctr.hidden_units": [32, 32], "train.epochs": 2, "train.batch_size": 256,
         "train.checkpoint_every_steps": 5, "optim.name": "helen"}
DATA_STAGES = (("avazu", "download"), ("avazu", "normalize", "x4"), ("avazu", "vocab"))


def recdag(cwd: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    env = dict(os.environ, TQDM_DISABLE="1")
    r = subprocess.run([sys.executable, "-m", "stages.cli", *args], cwd=cwd, env=env, capture_output=True,
                       text=True)
    if check:
        assert r.returncode == 0, f"recdag {' '.join(args)} failed:\n{r.stdout}\n{r.stderr}"
    return r


def new_project(root: Path) -> Path:
    root.mkdir(parents=True)
    shutil.copy(ROOT / "params.yaml", root / "params.yaml")
    (root / "conf").mkdir()
    shutil.copy(LAYOUTS, root / "conf" / "avazu_layouts.yaml")
    set_params(root, **SMALL)
    return root


def digest_tree(root: Path) -> dict[str, str]:
    return {p.relative_to(root).as_posix(): hashlib.md5(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def metrics_without_times(path: Path) -> dict:
    m = json.loads(path.read_text())
    m.pop("wall_seconds", None)
    return m


@pytest.fixture(scope="module")
def first(tmp_path_factory):
    """One uninterrupted run of the data stages and the baseline."""
    root = new_project(tmp_path_factory.mktemp("repro") / "a")
    for stage in DATA_STAGES:
        recdag(root, *stage)
    recdag(root, "avazu", "train-baseline")
    return root


def test_same_params_same_outputs(first, tmp_path):
    second = new_project(tmp_path / "b")
    for stage in DATA_STAGES:
        recdag(second, *stage)
    recdag(second, "avazu", "train-baseline")
    # data outputs: byte-identical files
    assert digest_tree(first / "data") == digest_tree(second / "data")
    # the model: bit-identical weights; the metrics: identical but for the wall time
    a = torch.load(first / "models/avazu/baseline/model.pt", weights_only=True)
    b = torch.load(second / "models/avazu/baseline/model.pt", weights_only=True)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert metrics_without_times(first / "reports/avazu/baseline.json") == \
        metrics_without_times(second / "reports/avazu/baseline.json")
    assert (first / "reports/avazu/baseline_curve.json").read_text() == \
        (second / "reports/avazu/baseline_curve.json").read_text()


def test_sigkill_mid_epoch_then_resume(first, tmp_path):
    root = tmp_path / "k"
    shutil.copytree(first, root, ignore=shutil.ignore_patterns("models", "reports"))
    env = dict(os.environ, TQDM_DISABLE="1")
    proc = subprocess.Popen([sys.executable, "-m", "stages.cli", "avazu", "train-baseline"], cwd=root, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    last = None
    while time.time() < deadline and proc.poll() is None:
        found = list((root / "models/.ckpt").glob("baseline-*/last.pt")) if (root / "models/.ckpt").is_dir() else []
        if found:
            last = found[0]
            break
        time.sleep(0.01)
    assert last is not None and proc.poll() is None, "the stage ended before a resume point was written"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    ckpt = torch.load(last, weights_only=True)
    steps_per_epoch = -(-16_000 // SMALL["train.batch_size"])
    assert 0 < ckpt["state"]["global_step"] < SMALL["train.epochs"] * steps_per_epoch   # killed mid-run
    assert ckpt["state"]["step_in_epoch"] > 0                                          # ... mid-epoch
    # no half-written outs: the declared outs do not exist, no temporary siblings are left in them
    assert not (root / "models/avazu/baseline").exists() and not (root / "reports/avazu/baseline.json").exists()
    assert leftovers(root) == [], "an atomic write left a temporary sibling behind"
    # re-run: resumes from last.pt and ends where the uninterrupted run ended
    r = recdag(root, "avazu", "train-baseline")
    assert "resumed from" in r.stderr
    assert metrics_without_times(root / "reports/avazu/baseline.json") == \
        metrics_without_times(first / "reports/avazu/baseline.json")
    a = torch.load(first / "models/avazu/baseline/model.pt", weights_only=True)
    b = torch.load(root / "models/avazu/baseline/model.pt", weights_only=True)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not list((root / "models/.ckpt").glob("baseline-*"))        # the resume point is cleaned up
