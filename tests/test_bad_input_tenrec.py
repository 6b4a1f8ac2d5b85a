"""Tenrec's raw log, each class of bad input: one `error:` line naming the file and the row/field, exit code 2,
nothing new left on disk; and the accepted variants (.csv.gz, a UTF-8 BOM, spaces in the header, blank lines
at the end) prepare exactly what the clean file prepares. Every case runs the real stage commands
(`recdag tenrec download` with `tenrec.source: local`, then `recdag tenrec prepare`)."""

from __future__ import annotations

import gzip
import json
import shutil
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from pipeline.tenrec.formats import COLUMNS
from tests.conftest import ROOT, leftovers, run_cli, set_params

HEADER = ",".join(COLUMNS)
NAME = "QB-video.csv"
RAW = Path("data/tenrec/raw")
PREPARED = Path("data/tenrec/prepared")
N_USERS, PER_USER = 250, 16                  # 4,000 rows, ~97 kB: rows from ~2,670 on lie beyond the reader's
                                             # first 64 KiB block (read when the reader opens)


def clean_rows() -> list[list[str]]:
    rows = []
    for u in range(N_USERS):
        for k in range(PER_USER):
            item = 1000 + (u * 7 + k * 13) % 500
            click = int(k % 3 == 0)
            like = int(click and k % 6 == 0)
            cat = "\\N" if item % 17 == 0 else str(item % 5)
            rows.append([str(u + 10), str(item), str(click), "0", str(like), "0", cat, str(2 * click),
                         str(u % 3), str(u % 8)])
    return rows


def csv_text(rows, header=HEADER, end="\n") -> str:
    return header + end + "".join(",".join(r) + end for r in rows)


def line_of(i: int) -> int:
    """File line of data row ``i`` (0-based; the header is line 1)."""
    return i + 2


@pytest.fixture
def tproj(tmp_path, monkeypatch):
    """A scratch project whose Tenrec source is the folder ``local/`` (empty until a test writes the log)."""
    shutil.copy(ROOT / "params.yaml", tmp_path / "params.yaml")
    (tmp_path / "local").mkdir()
    set_params(tmp_path, **{"tenrec.source": "local", "tenrec.local_dir": str(tmp_path / "local"),
                            "tenrec.batch_rows": 1000})
    monkeypatch.chdir(tmp_path)
    return tmp_path


def files(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*") if p.is_file()}


def fail(root: Path, capsys, stage: str, needles) -> str:
    """Run ``recdag tenrec <stage>``: exit code 2, one `error:` line holding every needle, no new file."""
    before = files(root)
    capsys.readouterr()
    code = run_cli("tenrec", stage)
    err = capsys.readouterr().err
    assert code == 2, err
    assert err.count("error:") == 1, err
    line = next(ln for ln in err.splitlines() if ln.startswith("error:"))
    for n in needles:
        assert n in line, line
    assert files(root) == before, sorted(files(root) - before)
    assert not leftovers(root)
    return line


def download(root: Path, capsys) -> None:
    assert run_cli("tenrec", "download") == 0, capsys.readouterr().err


def fail_prepare(root: Path, capsys, text: str | bytes, needles, name: str = NAME) -> str:
    """Write ``text`` as the local log, download it (which checks the header only), fail prepare."""
    write(root / "local" / name, text)
    download(root, capsys)
    return fail(root, capsys, "prepare", [str(RAW / name), *needles])


def write(path: Path, text: str | bytes) -> Path:
    data = text.encode("utf-8") if isinstance(text, str) else text
    path.write_bytes(gzip.compress(data) if path.name.endswith(".gz") and data[:2] != b"\x1f\x8b" else data)
    return path


def outputs(root: Path) -> dict:
    out = {name: pq.read_table(root / PREPARED / name) for name in ("ctr.parquet", "sequences.parquet",
                                                                     "items.parquet")}
    out["meta.json"] = json.loads((root / PREPARED / "meta.json").read_text())
    out["prepare.json"] = json.loads((root / "reports/tenrec/prepare.json").read_text())
    return out


def prepared_from(root: Path, capsys, name: str, data: str | bytes) -> dict:
    for p in (root / "local").iterdir():
        p.unlink()
    write(root / "local" / name, data)
    download(root, capsys)
    assert run_cli("tenrec", "prepare") == 0, capsys.readouterr().err
    assert not leftovers(root)
    return outputs(root)


def same(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for k in a:
        if k.endswith(".parquet"):
            assert a[k].equals(b[k]), k
        else:
            assert a[k] == b[k], k


def with_value(rows, i: int, field: str, value: str):
    rows = [list(r) for r in rows]
    rows[i][COLUMNS.index(field)] = value
    return rows


# ------------------------------------------------------------------------------------- accepted variants
def test_accepted_variants_prepare_the_same_outputs_as_the_clean_file(tproj, capsys):
    rows = clean_rows()
    clean = prepared_from(tproj, capsys, NAME, csv_text(rows))
    assert clean["meta.json"]["rows"] == len(rows)
    spaced = HEADER.replace(",", ", ")
    variants = {
        "header with spaces after the commas": (NAME, csv_text(rows, header=spaced)),
        "header with spaces around the names": (NAME, csv_text(rows, header=" " + HEADER.replace(",", " , ") + " ")),
        "UTF-8 BOM": (NAME, "\ufeff" + csv_text(rows)),
        "CRLF line ends": (NAME, csv_text(rows, end="\r\n")),
        "blank lines at the end": (NAME, csv_text(rows) + "\n\n"),
        ".csv.gz": (NAME + ".gz", csv_text(rows)),
        ".csv.gz with a BOM and a spaced header": (NAME + ".gz", "\ufeff" + csv_text(rows, header=spaced)),
    }
    for what, (name, data) in variants.items():
        got = prepared_from(tproj, capsys, name, data)
        try:
            same(got, clean)
        except AssertionError as e:
            raise AssertionError(f"{what}: {e}") from None
    assert json.loads((tproj / RAW / "manifest.json").read_text())["file"] == NAME + ".gz"


# ------------------------------------------------------------------------------------------- 1. header
def test_spaced_header_keeps_values_exact_a_spaced_value_is_an_error(tproj, capsys):
    rows = with_value(clean_rows(), 40, "item_id", " 1003")
    fail_prepare(tproj, capsys, csv_text(rows, header=HEADER.replace(",", ", ")),
                 [f"row {line_of(40)}", "field 'item_id'", "not an integer: ' 1003'"])


def test_wrong_header_name(tproj, capsys):
    write(tproj / "local" / NAME, csv_text(clean_rows(), header=HEADER.replace("gender", "sex")))
    fail(tproj, capsys, "download", [NAME, "row 1", "field 'gender'", "missing column 'gender'"])


# -------------------------------------------------------------------------------------- 2. field count
@pytest.mark.parametrize("i, cut", [(1, 6), (2500, 6), (3500, 6), (3600, 11)],
                         ids=["first block", "end of first block", "later block", "extra field"])
def test_wrong_field_count_names_the_line(tproj, capsys, i, cut):
    rows = clean_rows()
    rows[i] = rows[i][:cut] if cut < len(COLUMNS) else rows[i] + ["7"]
    fail_prepare(tproj, capsys, csv_text(rows), [f"row {line_of(i)}", f"row has {len(rows[i])} fields",
                                                 "expected 10 fields as in the header"])


def test_wrong_field_count_in_a_gz_log(tproj, capsys):
    rows = clean_rows()
    rows[3] = rows[3][:4]
    fail_prepare(tproj, capsys, csv_text(rows), [f"row {line_of(3)}", "row has 4 fields"], name=NAME + ".gz")


def test_blank_line_inside_the_log(tproj, capsys):
    rows = clean_rows()
    text = csv_text(rows[:700]) + "\n" + "".join(",".join(r) + "\n" for r in rows[700:])
    fail_prepare(tproj, capsys, text, [f"row {line_of(700)}", "empty line"])


# ------------------------------------------------------------------------------ 3. out of range / ids
@pytest.mark.parametrize("i, field, value, problem", [
    (1234, "item_id", "99999999999999999999", "out of range: 99999999999999999999"),
    (1234, "user_id", "-5", "negative id -5"),
    (2001, "item_id", "0x10", "not an integer: '0x10'"),           # pyarrow's cast would read 16
    (999, "age", "9", "out of range: 9"),
    (1500, "click", "2", "not binary: 2"),
    (1501, "video_category", "-1", "negative value -1"),           # -1 is prepare's code for \N
])
def test_bad_value_reports_its_exact_row_and_field(tproj, capsys, i, field, value, problem):
    fail_prepare(tproj, capsys, csv_text(with_value(clean_rows(), i, field, value)),
                 [f"row {line_of(i)}", f"field '{field}'", problem])


def test_the_earliest_bad_row_wins_over_an_earlier_column(tproj, capsys):
    rows = with_value(with_value(clean_rows(), 1300, "user_id", "x"), 1200, "age", "abc")
    fail_prepare(tproj, capsys, csv_text(rows), [f"row {line_of(1200)}", "field 'age'"])


# -------------------------------------------------------------------------------------------- 4. gzip
def test_gzip_bytes_under_a_csv_name(tproj, capsys):
    (tproj / "local" / NAME).write_bytes(gzip.compress(csv_text(clean_rows()).encode()))
    fail(tproj, capsys, "download", [NAME, "gzip-compressed but its name does not end in .gz"])


def test_gzip_bytes_under_a_csv_name_in_the_raw_folder(tproj, capsys):
    write(tproj / "local" / NAME, csv_text(clean_rows()))
    download(tproj, capsys)
    (tproj / RAW / NAME).unlink()
    (tproj / RAW / NAME).write_bytes(gzip.compress(csv_text(clean_rows()).encode()))
    fail(tproj, capsys, "prepare", [str(RAW / NAME), "gzip-compressed but its name does not end in .gz"])


def test_both_plain_and_gz_present(tproj, capsys):
    write(tproj / "local" / NAME, csv_text(clean_rows()))
    write(tproj / "local" / (NAME + ".gz"), csv_text(clean_rows()))
    fail(tproj, capsys, "download", [f"both {tproj / 'local' / NAME} and {tproj / 'local' / NAME}.gz"])


def test_truncated_gz(tproj, capsys):
    data = gzip.compress(csv_text(clean_rows()).encode())
    fail_prepare(tproj, capsys, data[: len(data) // 2], ["not a readable gzip file"], name=NAME + ".gz")


# ------------------------------------------------------------------------------------------- 5. UTF-8
def test_invalid_utf8_names_line_and_field(tproj, capsys):
    text = csv_text(with_value(clean_rows(), 2222, "item_id", "10\udcff3"))
    data = text.encode("utf-8", errors="surrogateescape")
    fail_prepare(tproj, capsys, data, [f"row {line_of(2222)}", "field 'item_id'", "not valid UTF-8",
                                       "0xff"])


def test_invalid_utf8_in_the_header(tproj, capsys):
    data = csv_text(clean_rows()).encode().replace(b"gender", b"gen\xffder", 1)
    write(tproj / "local" / NAME, data)
    fail(tproj, capsys, "download", [NAME, "row 1", "header is not valid UTF-8"])


# ------------------------------------------------------------------------------ 6. empty / NaN / text
@pytest.mark.parametrize("i, field, value, problem", [
    (5, "user_id", "", "empty value"),
    (1777, "item_id", "", "empty value"),
    (1777, "click", "NaN", "not an integer: 'NaN'"),
    (1777, "watching_times", "nan", "not an integer: 'nan'"),
    (3999, "item_id", "\\N", "not an integer: '\\\\N'"),
    (2, "gender", "1.0", "not an integer: '1.0'"),
    (2, "age", "abc", "not an integer: 'abc'"),
    (2, "video_category", "", "empty value"),
    (2, "video_category", "news", "not an integer: 'news'"),
])
def test_empty_nan_or_text_in_a_numeric_column(tproj, capsys, i, field, value, problem):
    fail_prepare(tproj, capsys, csv_text(with_value(clean_rows(), i, field, value)),
                 [f"row {line_of(i)}", f"field '{field}'", problem])


# ------------------------------------------------------------------------------- 7. intermediate files
def test_bad_manifest(tproj, capsys):
    write(tproj / "local" / NAME, csv_text(clean_rows()))
    download(tproj, capsys)
    (tproj / RAW / "manifest.json").write_text('{"source": ')
    fail(tproj, capsys, "prepare", [str(RAW / "manifest.json"), "not valid JSON"])
    (tproj / RAW / "manifest.json").write_text("{}")
    fail(tproj, capsys, "prepare", [str(RAW / "manifest.json"), "field 'source'", "missing field"])


def test_truncated_oracle_sidecar(tproj, capsys):
    write(tproj / "local" / NAME, csv_text(clean_rows()))
    download(tproj, capsys)
    oracle = tproj / RAW / "QB-video.oracle.parquet"
    oracle.write_bytes(b"PAR1 not a parquet file")
    fail(tproj, capsys, "prepare", [str(RAW / "QB-video.oracle.parquet"), "not a readable parquet file"])


def test_truncated_sequences_read_downstream(tproj, capsys):
    write(tproj / "local" / NAME, csv_text(clean_rows()))
    download(tproj, capsys)
    assert run_cli("tenrec", "prepare") == 0
    seq = tproj / PREPARED / "sequences.parquet"
    seq.write_bytes(seq.read_bytes()[:200])
    fail(tproj, capsys, "train-retrieval", [str(PREPARED / "sequences.parquet"), "not a readable parquet file"])
