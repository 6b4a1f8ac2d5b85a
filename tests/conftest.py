"""Shared fixtures: every test builds its own tiny data with the synthetic generator (no network, no ../shared)."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import pytest
import yaml

from pipeline.ctr.download import fetch_synthetic
from pipeline.ctr.schema import load_layouts

ROOT = Path(__file__).resolve().parents[1]
LAYOUTS = ROOT / "conf" / "avazu_layouts.yaml"


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
