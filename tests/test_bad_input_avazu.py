"""Bad Avazu raw CSVs, through the real stage commands: each class gives exactly one `error:` line naming
the file (and row / field where they apply), exit code 2 and no partial outputs; the accepted variants
(.csv.gz, a BOM, spaces in the header, pure 6-digit hours, out_of_window: warn) give the same output."""

import gzip
import json
import logging
import shutil
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from pipeline.core.errors import ConfigError
from pipeline.core.io import md5_file
from pipeline.ctr import download as dl
from pipeline.ctr.schema import load_layouts
from tests.conftest import LAYOUTS, leftovers, run_cli, set_params

RAW_X4 = Path("data/avazu/raw/x4")
NORM_X4 = Path("data/avazu/interim/base/normalized/x4")
SPLITS = ("train", "valid", "test")
X4_ONLY = {"avazu.sources": ["x4"], "avazu.split_valid.sources": [], "avazu.sample.sources": []}


@pytest.fixture
def x4(project, tiny_raw):
    set_params(project, **X4_ONLY)
    shutil.copytree(tiny_raw / "x4", project / RAW_X4)
    return project


def _data_files() -> set[str]:
    return {str(p) for p in Path("data").rglob("*") if not p.is_dir()} if Path("data").exists() else set()


def _fail(capsys, args, needles, output=None):
    """Run ``recdag <args>``: exit code 2, one error line holding every needle, nothing new under data/."""
    before = _data_files()
    code = run_cli(*args)
    err = capsys.readouterr().err
    assert code == 2, err
    lines = [l for l in err.splitlines() if l.startswith("error:")]
    assert len(lines) == 1 and err.count("error:") == 1, err
    for n in needles:
        assert n in lines[0], lines[0]
    assert "Traceback" not in err
    if output is not None:
        assert not Path(output).exists(), "a failed stage must leave no output"
    assert _data_files() <= before, sorted(_data_files() - before)
    assert not leftovers(Path("data")), leftovers(Path("data"))
    return lines[0]


def _fail_normalize(capsys, needles):
    return _fail(capsys, ("avazu", "normalize", "x4"), needles, NORM_X4)


def _set_hour(path: Path, line: int, value: str) -> None:
    """Line ``line`` (1-based, header = 1) of an x4 CSV gets ``value`` in its hour column."""
    lines = path.read_text().splitlines(keepends=True)
    f = lines[line - 1].split(",")
    f[2] = value
    lines[line - 1] = ",".join(f)
    path.write_text("".join(lines))


def _normalized() -> dict:
    return {s: pq.read_table(NORM_X4 / f"{s}.parquet") for s in SPLITS}


def _gzip(path: Path) -> Path:
    gz = path.with_name(path.name + ".gz")
    gz.write_bytes(gzip.compress(path.read_bytes()))
    path.unlink()
    return gz


@pytest.fixture
def reference(x4, capsys):
    """The normalized output of the pristine x4 files (then removed again)."""
    assert run_cli("avazu", "normalize", "x4") == 0, capsys.readouterr().err
    ref = _normalized()
    shutil.rmtree(NORM_X4)
    return ref


# --- hours: real calendar dates, the declared window, one width per file


@pytest.mark.parametrize("value, reason", [("14023000", "2014-02-30 is not a calendar date"),
                                           ("14043100", "2014-04-31 is not a calendar date"),
                                           ("14102124", "hour 24 > 23")])
def test_hour_that_is_not_a_real_date_and_hour(x4, capsys, value, reason):
    _set_hour(x4 / RAW_X4 / "train.csv", 4, value)
    line = _fail_normalize(capsys, [str(RAW_X4 / "train.csv"), "row 4", "field 'hour'", f"'{value}'", reason,
                                    "8-digit YYMMDDHH"])
    assert line == (f"error: {RAW_X4 / 'train.csv'}, row 4, field 'hour': hour value '{value}' is not a real "
                    f"date and hour ({reason}) (expected 8-digit YYMMDDHH of a calendar date, hour 00-23)")


def test_hour_outside_the_declared_window_is_an_error(x4, capsys):
    _set_hour(x4 / RAW_X4 / "valid.csv", 7, "14103100")          # Kaggle's test day: outside 21..30
    _fail_normalize(capsys, [str(RAW_X4 / "valid.csv"), "row 7", "field 'hour'", "'14103100'",
                             "outside the layout's declared date window 2014-10-21..2014-10-30",
                             "avazu.out_of_window: warn"])


def test_hour_outside_the_window_with_warn_is_kept_and_logged_once(x4, capsys, caplog):
    set_params(x4, **{"avazu.out_of_window": "warn"})
    train = x4 / RAW_X4 / "train.csv"
    for line in (3, 9, 10):
        _set_hour(train, line, "14102005" if line == 3 else "14110123")
    with caplog.at_level(logging.WARNING):
        assert run_cli("avazu", "normalize", "x4") == 0, capsys.readouterr().err
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1, warnings
    assert "train.csv" in warnings[0] and "3 row(s)" in warnings[0] and "2014-10-21..2014-10-30" in warnings[0]
    t = pq.read_table(NORM_X4 / "train.parquet").to_pandas()
    assert (t.hour_of_day[1], t.weekday[1]) == (5, 0)              # 2014-10-20 05h, a Monday
    assert (t.hour_of_day[8], t.weekday[8]) == (23, 5)             # 2014-11-01 23h, a Saturday
    meta = json.loads((NORM_X4 / "meta.json").read_text())
    assert meta["splits"]["train"]["out_of_window_rows"] == 3
    assert "out_of_window_rows" not in meta["splits"]["valid"]


def test_mixed_hour_widths_in_one_file(x4, capsys):
    _set_hour(x4 / RAW_X4 / "test.csv", 5, "142105")              # a 6-digit YYDDHH among 8-digit hours
    line = _fail_normalize(capsys, [str(RAW_X4 / "test.csv"), "row 5", "field 'hour'", "'142105'",
                                    "first data row (row 2)", "8-digit YYMMDDHH like the rest of the file"])
    assert line.startswith(f"error: {RAW_X4 / 'test.csv'}, row 5, field 'hour': hour value '142105' has 6 digits")


def test_pure_six_digit_hours_still_work(reference, capsys):
    for s in SPLITS:
        p = RAW_X4 / f"{s}.csv"
        lines = p.read_text().splitlines(keepends=True)
        out = [lines[0]]
        for l in lines[1:]:
            f = l.split(",")
            f[2] = f[2][:2] + f[2][4:]                             # YYMMDDHH -> YYDDHH (month 10 declared)
            out.append(",".join(f))
        p.write_text("".join(out))
    assert run_cli("avazu", "normalize", "x4") == 0, capsys.readouterr().err
    got = _normalized()
    for s in SPLITS:
        assert got[s].equals(reference[s])


def test_window_declared_half_is_a_config_error(tmp_path):
    text = LAYOUTS.read_text().replace(', window_end: "2014-10-30"', "", 1)
    (tmp_path / "l.yaml").write_text(text)
    with pytest.raises(ConfigError, match="window_end"):
        load_layouts(tmp_path / "l.yaml")


# --- header variants


def test_header_with_spaces_after_the_commas_is_accepted(reference, capsys):
    p = RAW_X4 / "train.csv"
    lines = p.read_text().splitlines(keepends=True)
    p.write_text(lines[0].replace(",", ", ") + "".join(lines[1:]))
    side = RAW_X4 / "train.oracle.csv"
    side.write_text(side.read_text().replace("p_click", " p_click ", 1))
    assert run_cli("avazu", "normalize", "x4") == 0, capsys.readouterr().err
    assert _normalized()["train"].equals(reference["train"])


def test_utf8_bom_is_accepted(reference, capsys):
    for name in ("valid.csv", "valid.oracle.csv"):
        p = RAW_X4 / name
        p.write_bytes(b"\xef\xbb\xbf" + p.read_bytes())
    assert run_cli("avazu", "normalize", "x4") == 0, capsys.readouterr().err
    assert _normalized()["valid"].equals(reference["valid"])


# --- compression


def test_csv_gz_reads_like_the_csv(reference, capsys):
    for s in SPLITS:
        _gzip(RAW_X4 / f"{s}.csv")
    _gzip(RAW_X4 / "test.oracle.csv")
    assert run_cli("avazu", "normalize", "x4") == 0, capsys.readouterr().err
    got = _normalized()
    for s in SPLITS:
        assert got[s].equals(reference[s])


def test_both_csv_and_csv_gz(x4, capsys):
    (x4 / RAW_X4 / "valid.csv.gz").write_bytes(gzip.compress((x4 / RAW_X4 / "valid.csv").read_bytes()))
    _fail_normalize(capsys, [str(RAW_X4 / "valid.csv"), str(RAW_X4 / "valid.csv.gz"), "both"])


def test_gzip_bytes_under_a_csv_name(x4, capsys):
    p = x4 / RAW_X4 / "train.csv"
    p.write_bytes(gzip.compress(p.read_bytes()))
    _fail_normalize(capsys, [str(RAW_X4 / "train.csv"), "is gzip-compressed but its name does not end in .gz"])


def test_truncated_csv_gz(x4, capsys):
    gz = _gzip(x4 / RAW_X4 / "train.csv")
    data = gz.read_bytes()
    gz.write_bytes(data[: len(data) // 2])
    _fail_normalize(capsys, [str(RAW_X4 / "train.csv.gz"), "not a readable gzip file", "complete gzip stream"])


# --- encoding


def test_invalid_utf8_names_row_and_field(x4, capsys):
    p = x4 / RAW_X4 / "train.csv"
    lines = p.read_bytes().splitlines(keepends=True)
    f = lines[5].split(b",")
    f[6] = b"ab\xff\xfecd"                                          # line 6, column site_domain
    lines[5] = b",".join(f)
    p.write_bytes(b"".join(lines))
    line = _fail_normalize(capsys, [str(RAW_X4 / "train.csv"), "row 6", "field 'site_domain'", "UTF-8"])
    assert line == (f"error: {RAW_X4 / 'train.csv'}, row 6, field 'site_domain': value is not valid UTF-8 text "
                    "(expected UTF-8 encoded CSV text)")


# --- download: md5 of the user's own files, .gz copies, ~ in local_dir


def _local(project, tiny_raw, folder: Path, gz: bool = False, **params) -> Path:
    (folder / "x4").mkdir(parents=True)
    for s in SPLITS:
        target = folder / "x4" / f"{s}.csv"
        shutil.copyfile(tiny_raw / "x4" / f"{s}.csv", target)
        if gz:
            _gzip(target)
    set_params(project, **{"avazu.source": "local", "avazu.local_dir": str(folder), **X4_ONLY, **params})
    return folder


def _fail_download(capsys, needles):
    return _fail(capsys, ("avazu", "download"), needles, "data/avazu/raw")


def test_md5_mismatch_names_the_users_file(project, tiny_raw, capsys):
    mine = _local(project, tiny_raw, project / "mine")           # real published md5s: tiny data cannot match
    line = _fail_download(capsys, [str(mine / "x4" / "train.csv"), "md5 mismatch",
                                   dl.PUBLISHED_MD5["x4"]["train"], "avazu.verify_md5: false"])
    assert ".tmp-" not in line


def test_verify_md5_false_accepts_own_copies_and_is_recorded(project, tiny_raw, capsys):
    _local(project, tiny_raw, project / "mine", **{"avazu.verify_md5": False})
    assert run_cli("avazu", "download") == 0, capsys.readouterr().err
    manifest = json.loads(Path("data/avazu/raw/manifest.json").read_text())["sources"]["x4"]
    assert manifest["md5_verified"] is False
    assert manifest["md5"] == {s: md5_file(tiny_raw / "x4" / f"{s}.csv") for s in SPLITS}


def test_local_dir_with_tilde(project, tiny_raw, capsys, monkeypatch):
    home = project / "home"
    monkeypatch.setenv("HOME", str(home))
    _local(project, tiny_raw, home / "avazu", **{"avazu.verify_md5": False})
    set_params(project, **{"avazu.local_dir": "~/avazu"})
    assert run_cli("avazu", "download") == 0, capsys.readouterr().err
    assert (RAW_X4 / "test.csv").read_bytes() == (tiny_raw / "x4" / "test.csv").read_bytes()


def test_local_dir_with_tilde_missing_folder(project, capsys, monkeypatch):
    monkeypatch.setenv("HOME", str(project / "home"))
    set_params(project, **{"avazu.source": "local", "avazu.local_dir": "~/nothing", **X4_ONLY})
    _fail_download(capsys, [str(project / "home" / "nothing"), "no folder for source x4"])


def test_local_csv_gz_is_hashed_as_csv_and_normalizes(project, tiny_raw, capsys, monkeypatch):
    monkeypatch.setattr(dl, "PUBLISHED_MD5", {"x4": {s: md5_file(tiny_raw / "x4" / f"{s}.csv") for s in SPLITS}})
    _local(project, tiny_raw, project / "mine", gz=True)
    assert run_cli("avazu", "download") == 0, capsys.readouterr().err
    assert sorted(p.name for p in RAW_X4.iterdir()) == sorted(f"{s}.csv.gz" for s in SPLITS)
    manifest = json.loads(Path("data/avazu/raw/manifest.json").read_text())["sources"]["x4"]
    assert manifest["md5_verified"] is True
    assert run_cli("avazu", "normalize", "x4") == 0, capsys.readouterr().err
    assert pq.read_metadata(NORM_X4 / "train.parquet").num_rows == len(
        (tiny_raw / "x4" / "train.csv").read_text().splitlines()) - 1


def test_local_truncated_csv_gz(project, tiny_raw, capsys):
    mine = _local(project, tiny_raw, project / "mine", gz=True, **{"avazu.verify_md5": False})
    gz = mine / "x4" / "valid.csv.gz"
    gz.write_bytes(gz.read_bytes()[:-200])
    _fail_download(capsys, [str(gz), "not a readable gzip file"])


def test_local_gzip_bytes_under_a_csv_name(project, tiny_raw, capsys):
    mine = _local(project, tiny_raw, project / "mine", **{"avazu.verify_md5": False})
    p = mine / "x4" / "test.csv"
    p.write_bytes(gzip.compress(p.read_bytes()))
    _fail_download(capsys, [str(p), "is gzip-compressed but its name does not end in .gz"])
