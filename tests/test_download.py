"""download: the hf path (fake downloader, never the network), the local path, the synthetic path."""

import json
import zipfile
from pathlib import Path

import pytest

from pipeline.core.io import md5_file
from pipeline.ctr import download as dl
from tests.conftest import run_cli, set_params

SPLITS = {"x1": ("train", "valid", "test"), "x2": ("train", "test"), "x4": ("train", "valid", "test")}


@pytest.fixture
def fake_hub(tmp_path, tiny_raw, monkeypatch):
    """Zips laid out like reczoo's (a top folder inside), a downloader that records its calls, and the
    published md5s replaced by the fake files' md5s."""
    calls = []
    zips, md5 = {}, {}
    for src, splits in SPLITS.items():
        z = tmp_path / "hub" / dl.HF_FILES[src]
        z.parent.mkdir(exist_ok=True)
        with zipfile.ZipFile(z, "w", compression=zipfile.ZIP_DEFLATED) as zf:
            for s in splits:
                zf.write(tiny_raw / src / f"{s}.csv", f"Avazu_{src}/{s}.csv")
            zf.writestr(f"Avazu_{src}/README.md", "reczoo")
        zips[dl.HF_REPOS[src]] = z
        md5[src] = {s: md5_file(tiny_raw / src / f"{s}.csv") for s in splits}

    def downloader(repo_id, filename, revision):
        calls.append((repo_id, filename, revision))
        assert filename == dl.HF_FILES[repo_id.split("_")[-1]]
        return str(zips[repo_id])

    monkeypatch.setattr(dl, "hf_downloader", downloader)
    monkeypatch.setattr(dl, "PUBLISHED_MD5", md5)
    return calls


def test_hf_download_stage(project, fake_hub, capsys):
    set_params(project, **{"avazu.source": "hf", "avazu.hf_revision": "v1"})
    assert run_cli("avazu", "download") == 0, capsys.readouterr().err
    raw = project / "data/avazu/raw"
    for src, splits in SPLITS.items():
        assert sorted(p.name for p in (raw / src).iterdir()) == sorted(f"{s}.csv" for s in splits)
    assert sorted(c[0] for c in fake_hub) == ["reczoo/Avazu_x1", "reczoo/Avazu_x2", "reczoo/Avazu_x4"]
    assert {c[2] for c in fake_hub} == {"v1"}
    manifest = json.loads((raw / "manifest.json").read_text())
    assert manifest["source"] == "hf" and set(manifest["sources"]["x4"]["md5"]) == {"train", "valid", "test"}


def test_hf_only_the_configured_sources(project, fake_hub, capsys):
    set_params(project, **{"avazu.source": "hf", "avazu.sources": ["x4"], "avazu.split_valid.sources": [],
                           "avazu.sample.sources": []})
    assert run_cli("avazu", "download") == 0
    assert [c[0] for c in fake_hub] == ["reczoo/Avazu_x4"]
    assert sorted(p.name for p in (project / "data/avazu/raw").iterdir()) == ["manifest.json", "x4"]


def test_published_md5s_are_the_documented_ones():
    assert dl.PUBLISHED_MD5["x1"]["train"] == "f1114a07aea9e996842c71648e0f6395"
    assert dl.PUBLISHED_MD5["x2"]["train"] == "c41d786896e2ebe68e08a022199f0ce8"
    assert dl.PUBLISHED_MD5["x4"] == {"train": "de3a27264cdabf66adf09df82328ccaa",
                                      "valid": "33232931d84d6452d3f956e936cab2c9",
                                      "test": "3ebb774a9ca74d05919b84a3d402986d"}


def test_local_source_accepts_reczoo_folder_names(project, tiny_raw, capsys, monkeypatch):
    local = project / "mine"
    (local / "Avazu_x4").mkdir(parents=True)
    for s in SPLITS["x4"]:
        (local / "Avazu_x4" / f"{s}.csv").write_bytes((tiny_raw / "x4" / f"{s}.csv").read_bytes())
    monkeypatch.setattr(dl, "PUBLISHED_MD5", {})
    set_params(project, **{"avazu.source": "local", "avazu.local_dir": str(local), "avazu.sources": ["x4"],
                           "avazu.split_valid.sources": [], "avazu.sample.sources": []})
    assert run_cli("avazu", "download") == 0, capsys.readouterr().err
    assert (project / "data/avazu/raw/x4/test.csv").read_bytes() == (tiny_raw / "x4/test.csv").read_bytes()


def test_local_source_missing_folder(project, capsys):
    set_params(project, **{"avazu.source": "local", "avazu.local_dir": str(project / "nothing")})
    assert run_cli("avazu", "download") == 2
    assert "no folder for source x1" in capsys.readouterr().err
    assert not Path("data/avazu/raw").exists()


def test_synthetic_download_is_deterministic(project, capsys):
    set_params(project, **{"avazu.synthetic.rows": 3000})
    assert run_cli("avazu", "download") == 0
    first = json.loads(Path("data/avazu/raw/manifest.json").read_text())
    assert run_cli("avazu", "download") == 0
    assert json.loads(Path("data/avazu/raw/manifest.json").read_text()) == first
    assert first["source"] == "synthetic" and (Path("data/avazu/raw/x2/test.oracle.csv")).is_file()
