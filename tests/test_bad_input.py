"""Each class of bad input: one clear error naming file and row/field, exit code 2, no partial outputs."""

import shutil
import zipfile
from pathlib import Path

import pytest

from pipeline.core.errors import DataError
from pipeline.ctr import download as dl
from tests.conftest import leftovers, run_cli, set_params

NORM_X4 = Path("data/avazu/interim/base/normalized/x4")


@pytest.fixture
def x4_project(project, tiny_raw):
    set_params(project, **{"avazu.sources": ["x4"], "avazu.split_valid.sources": [], "avazu.sample.sources": []})
    shutil.copytree(tiny_raw / "x4", project / "data/avazu/raw/x4")
    return project


def _rewrite(path: Path, fn):
    lines = path.read_text().splitlines(keepends=True)
    path.write_text("".join(fn(lines)))


def _fail_normalize(capsys, needles):
    code = run_cli("avazu", "normalize", "x4")
    err = capsys.readouterr().err
    assert code == 2, err
    for n in needles:
        assert n in err, err
    assert err.count("error:") == 1
    assert not NORM_X4.exists(), "a failed stage must leave no output"
    assert not leftovers(Path("data")), leftovers(Path("data"))
    return err


def test_good_input_passes(x4_project, capsys):
    assert run_cli("avazu", "normalize", "x4") == 0
    assert (NORM_X4 / "test.parquet").is_file() and not leftovers(Path("data"))


def test_missing_column(x4_project, capsys):
    train = x4_project / "data/avazu/raw/x4/train.csv"
    _rewrite(train, lambda ls: [",".join(c for i, c in enumerate(l.rstrip("\n").split(",")) if i != 5) + "\n"
                                for l in ls])                          # drop site_id everywhere
    _fail_normalize(capsys, [str(Path("data/avazu/raw/x4/train.csv")), "row 1", "field 'site_id'",
                             "missing column"])


def test_unknown_extra_column(x4_project, capsys):
    train = x4_project / "data/avazu/raw/x4/train.csv"
    _rewrite(train, lambda ls: [ls[0].rstrip("\n") + ",extra\n"] + [l.rstrip("\n") + ",1\n" for l in ls[1:]])
    _fail_normalize(capsys, ["train.csv", "field 'extra'", "unknown extra column"])


def test_wrong_field_count_in_a_row(x4_project, capsys):
    train = x4_project / "data/avazu/raw/x4/train.csv"
    _rewrite(train, lambda ls: ls[:4] + [ls[4].rsplit(",", 1)[0] + "\n"] + ls[5:])   # line 5 loses a field
    _fail_normalize(capsys, ["train.csv", "row 5", "23 fields", "expected 24 fields"])


def test_label_not_0_1(x4_project, capsys):
    train = x4_project / "data/avazu/raw/x4/train.csv"

    def bad(ls):
        f = ls[7].split(",")
        f[1] = "2"
        return ls[:7] + [",".join(f)] + ls[8:]
    _rewrite(train, bad)
    _fail_normalize(capsys, ["train.csv", "row 8", "field 'click'", "label value '2' is not 0/1"])


@pytest.mark.parametrize("value", ["2014102100", "14132100", "14102125", "1410x100", "141021"])
def test_hour_in_unknown_format(x4_project, capsys, value):
    set_params(x4_project, **{"avazu.layouts": "conf/strict.yaml"})
    text = (x4_project / "conf/avazu_layouts.yaml").read_text()
    (x4_project / "conf/strict.yaml").write_text(text.replace("column: hour, format: auto", "column: hour, format: yymmddhh", 1))
    train = x4_project / "data/avazu/raw/x4/train.csv"

    def bad(ls):
        f = ls[3].split(",")
        f[2] = value
        return ls[:3] + [",".join(f)] + ls[4:]
    _rewrite(train, bad)
    _fail_normalize(capsys, ["train.csv", "row 4", "field 'hour'", f"hour value '{value}'", "8-digit YYMMDDHH"])


def test_x1_hour_id_out_of_range(project, tiny_raw, capsys):
    set_params(project, **{"avazu.sources": ["x1"], "avazu.split_valid.sources": [], "avazu.sample.sources": [],
                           "train.sources": ["x1"]})
    shutil.copytree(tiny_raw / "x1", project / "data/avazu/raw/x1")
    valid = project / "data/avazu/raw/x1/valid.csv"
    _rewrite(valid, lambda ls: ls[:2] + [ls[2].rsplit(",", 1)[0] + ",1544300\n"] + ls[3:])
    code = run_cli("avazu", "normalize", "x1")
    err = capsys.readouterr().err
    assert code == 2 and "valid.csv, row 3, field 'feat_22'" in err and "[1544248, 1544271]" in err
    assert not Path("data/avazu/interim/base/normalized/x1").exists()


@pytest.mark.parametrize("content, needle", [("", "file is empty"),
                                              (None, "has a header but no data rows")])
def test_empty_file(x4_project, capsys, content, needle):
    test = x4_project / "data/avazu/raw/x4/test.csv"
    test.write_text(content if content is not None else test.read_text().splitlines()[0] + "\n")
    (x4_project / "data/avazu/raw/x4/test.oracle.csv").unlink()
    _fail_normalize(capsys, ["test.csv", needle])


def test_oracle_sidecar_misaligned(x4_project, capsys):
    side = x4_project / "data/avazu/raw/x4/valid.oracle.csv"
    _rewrite(side, lambda ls: ls + ["0.5\n"])
    _fail_normalize(capsys, ["valid.oracle.csv", "more rows than its CSV"])


# --- download: corrupt zip, md5 mismatch, entries escaping the target


def _zip(path: Path, entries: dict[str, bytes]) -> Path:
    with zipfile.ZipFile(path, "w") as z:
        for name, data in entries.items():
            z.writestr(name, data)
    return path


def _hf_project(project, monkeypatch, zip_path):
    set_params(project, **{"avazu.source": "hf", "avazu.sources": ["x4"], "avazu.split_valid.sources": [],
                           "avazu.sample.sources": []})
    monkeypatch.setattr(dl, "hf_downloader", lambda repo, filename, rev: str(zip_path))


def _fail_download(capsys, needles):
    code = run_cli("avazu", "download")
    err = capsys.readouterr().err
    assert code == 2, err
    for n in needles:
        assert n in err, err
    assert not Path("data/avazu/raw").exists() and not leftovers(Path("data"))


def test_corrupt_zip(project, monkeypatch, capsys, tmp_path):
    bad = tmp_path / "Avazu_x4.zip"
    bad.write_bytes(b"PK\x03\x04 this is not really a zip archive")
    _hf_project(project, monkeypatch, bad)
    _fail_download(capsys, ["Avazu_x4.zip", "not a readable zip archive"])


def test_zip_with_crc_error(project, monkeypatch, capsys, tmp_path, tiny_raw):
    z = _zip(tmp_path / "Avazu_x4.zip", {f"Avazu_x4/{s}.csv": (tiny_raw / "x4" / f"{s}.csv").read_bytes()
                                         for s in ("train", "valid", "test")})
    data = bytearray(z.read_bytes())
    i = data.find(b"1005,")                   # flip bytes inside the stored (deflated?) payload
    data[i + 2:i + 40] = bytes(38)
    z.write_bytes(bytes(data))
    _hf_project(project, monkeypatch, z)
    monkeypatch.setattr(dl, "PUBLISHED_MD5", {})
    _fail_download(capsys, ["Avazu_x4.zip", "corrupt entry"])


def test_md5_mismatch(project, monkeypatch, capsys, tmp_path, tiny_raw):
    z = _zip(tmp_path / "Avazu_x4.zip", {f"Avazu_x4/{s}.csv": (tiny_raw / "x4" / f"{s}.csv").read_bytes()
                                         for s in ("train", "valid", "test")})
    _hf_project(project, monkeypatch, z)                      # real published md5s: cannot match tiny data
    _fail_download(capsys, ["train.csv", "md5 mismatch", "de3a27264cdabf66adf09df82328ccaa"])


@pytest.mark.parametrize("name", ["../evil.csv", "/abs/train.csv", "a/../../train.csv"])
def test_zip_entry_escaping_target(tmp_path, name):
    z = _zip(tmp_path / "a.zip", {name: b"x", "train.csv": b"x"})
    dest = tmp_path / "dest"
    dest.mkdir()
    with pytest.raises(DataError, match="escapes the target directory"):
        dl.safe_extract_csvs(z, ("train",), dest)
    assert list(dest.iterdir()) == [] and not (tmp_path / "evil.csv").exists()
