"""avazu_align on bad input, end to end through `recdag avazu align` in a scratch project: one line
``error: <file>[, field '<name>']: ... (expected ...)``, exit code 2, no traceback, no output (aligned/ and
reports/avazu/align.*). Plus the matcher cases tests/test_align.py does not cover yet.

The worlds are tests/test_align.py's hand-made ones (its ``make_world``), written where avazu_normalize puts
its outputs, with a layout table derived from conf/avazu_layouts.yaml (x2's declared rare bucket and
threshold kept) narrowed to the world's two fields and split lists.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import yaml

from pipeline.ctr.align import RARE
from tests.conftest import LAYOUTS, leftovers, run_cli, run_in, set_params
from tests.test_align import EVENTS, F, _write, align, make_world, mapping

NORM = Path("data/avazu/interim/base/normalized")
ALIGNED = Path("data/avazu/interim/base/aligned")
OUTPUTS = (ALIGNED, Path("reports/avazu/align.json"), Path("reports/avazu/align.md"))
SRC_SPLITS, X4_SPLITS = ["train", "valid", "test"], ["train", "test"]        # what make_world writes

# b1 and b2 both (2 occurrences, 1 click), and b has no other value: every fingerprint of b ties
ALL_TIE = [(0, 1, 1, "a1", "b1"), (1, 2, 1, "a1", "b1"), (0, 3, 1, "a2", "b2"), (1, 4, 1, "a3", "b2")]
# x2-like, declared threshold 20: a7 (seen once) is the only content of the merged bucket x2:0, so the
# bucket's fingerprint (1 occurrence, 0 clicks) is unique on both sides and equals a7's - the tempting guess
RARE_WORLD = ([(int(i < 5), i % 24, i % 7, "a1", "b1" if i < 24 else "b2") for i in range(25)]
              + [(int(i < 8), i % 24, (i + 3) % 7, "a2", "b2") for i in range(20)] + [(0, 7, 3, "a7", "b1")])


@pytest.fixture
def align_project(project):
    """The scratch project with a two-field layout table; no normalized data yet (see :func:`world`)."""
    raw = yaml.safe_load(LAYOUTS.read_text())
    raw["fields"] = F
    for name, lay in raw["layouts"].items():
        lay["columns"] = {f: f for f in F}
        lay["splits"] = X4_SPLITS if name == "x4" else SRC_SPLITS
    (project / "conf" / "align_tiny.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))
    set_params(project, **{"avazu.layouts": "conf/align_tiny.yaml", "avazu.sources": ["x1", "x4"],
                           "avazu.split_valid.sources": [], "avazu.sample.sources": [], "avazu.batch_rows": 3})
    return project


def world(root: Path, source: str, events=EVENTS, **kw) -> tuple[dict, dict, dict]:
    """Write ``events`` as the normalized ``source`` (relabelled into its namespace) and x4 (kept if there
    already); returns make_world's (source files, x4 files, expected mapping) at their final paths."""
    stage = root / f"world_{source}"
    stage.mkdir()
    _, _, expected = make_world(stage, events, ns=f"{source}:", with_weekday=source == "x2", **kw)
    (root / NORM).mkdir(parents=True, exist_ok=True)
    shutil.move(stage / "src", root / NORM / source)
    if not (root / NORM / "x4").exists():
        shutil.move(stage / "x4", root / NORM / "x4")
    shutil.rmtree(stage)
    files = {s: {sp: root / NORM / s / f"{sp}.parquet" for sp in splits}
             for s, splits in ((source, SRC_SPLITS), ("x4", X4_SPLITS))}
    return files[source], files["x4"], expected


def fail(capsys, needles: list[str]) -> str:
    """Run the stage; it must fail with one error line holding every needle, and leave nothing behind."""
    code = run_cli("avazu", "align")
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith("error: ")]
    assert code == 2, err
    assert len(lines) == 1 and err.count("error:") == 1, err
    assert "Traceback" not in err, err
    for n in needles:
        assert n in lines[0], lines[0]
    for out in OUTPUTS:
        assert not out.exists(), f"a failed align left {out}"
    assert not leftovers(Path(".")), leftovers(Path("."))
    return lines[0]


# ---------------------------------------------------------------------------------------------- the stage


def test_good_world_passes(align_project, capsys):
    """The same set-up without a defect aligns (so the failures below are the defects' doing)."""
    _, _, expected = world(align_project, "x1")
    assert run_cli("avazu", "align") == 0, capsys.readouterr().err
    rep = json.loads(Path("reports/avazu/align.json").read_text())
    assert rep["enabled"] and rep["sources"]["x1"]["total"]["share_mapped"] == 1.0
    got = {f: set(pq.read_table(ALIGNED / "x1" / "train.parquet", columns=[f]).column(f).to_pylist()) for f in F}
    assert all(got[f] <= set(expected[f].values()) for f in F) and not leftovers(Path("."))


def test_row_totals_differ(align_project, capsys):
    _, x4, _ = world(align_project, "x1")
    _write(x4["test"], [(0, 1, 1, "a1", "b1")] * 3, F, True)                 # x4: 2 + 3 rows, x1: 4
    line = fail(capsys, [str(NORM / "x1"), "the source has 4 rows", "but x4 has 5", "set avazu.align: false",
                         "(expected the same events as x4, re-split: equal row totals)"])
    assert line.endswith(")")


def test_click_totals_differ(align_project, capsys):
    _, x4, _ = world(align_project, "x1")
    _write(x4["test"], [(1, 5, 2, "a2", "b2"), (1, 5, 2, "a3", "b3")], F, True)    # 4 rows each, 1 vs 2 clicks
    fail(capsys, [str(NORM / "x1"), "the source has 1 clicks but x4 has 2", "both 4 rows",
                  "set avazu.align: false", "(expected the same events as x4, re-split: equal click totals)"])


@pytest.mark.parametrize("source, split", [("x1", "valid"), ("x2", "test"), ("x4", "test")])
def test_missing_split_file(align_project, capsys, source, split):
    """x1 and x2 both configured: when x2's file is the one missing, x1 (aligned first) is not written either."""
    set_params(align_project, **{"avazu.sources": ["x1", "x2", "x4"]})
    world(align_project, "x1")
    world(align_project, "x2")
    (NORM / source / f"{split}.parquet").unlink()
    side = "x4" if source == "x4" else "source"
    fail(capsys, [f"{NORM / source / split}.parquet: file not found", f"split '{split}' of {side}",
                  "(expected the normalized parquet file of every split)"])


def test_field_whose_fingerprints_all_tie(align_project, capsys):
    world(align_project, "x1", ALL_TIE)
    fail(capsys, [f"{NORM / 'x1'}, field 'b':", "every one of the field's 2 values shares its",
                  "(occurrences, clicks) fingerprint", "set avazu.align: false",
                  "(expected at least one value with a unique fingerprint)"])


def test_console_script_exit_code_and_no_traceback(align_project):
    """The installed `recdag` executable itself (not the in-process call): exit 2, one line, no traceback."""
    _, x4, _ = world(align_project, "x1")
    _write(x4["test"], [(0, 1, 1, "a1", "b1")] * 3, F, True)
    r = run_in(align_project, "recdag", "avazu", "align", ok=False)
    errors = [line for line in r.stderr.splitlines() if line.startswith("error: ")]
    assert r.returncode == 2 and len(errors) == 1 and "avazu.align: false" in errors[0], r.stderr
    assert "Traceback" not in r.stderr + r.stdout and not any(o.exists() for o in OUTPUTS)


def test_declared_rare_bucket_through_the_stage(align_project, capsys):
    """x2's merged bucket (conf: oov_id 0, oov_min_count 20) becomes the declared RARE token, not a7 - the
    one x4 value with the bucket's fingerprint; every other id gets its exact x4 token."""
    set_params(align_project, **{"avazu.sources": ["x2", "x4"]})
    _, _, expected = world(align_project, "x2", RARE_WORLD, merged={"a": {"a7"}})
    assert expected["a"] == {"x2:0": RARE, "x2:1": "a2", "x2:2": "a1"}
    assert run_cli("avazu", "align") == 0, capsys.readouterr().err
    rows = [r for sp in SRC_SPLITS for r in pq.read_table(ALIGNED / "x2" / f"{sp}.parquet").to_pylist()]
    assert {r["a"] for r in rows} == {"a1", "a2", RARE} and {r["b"] for r in rows} == {"b1", "b2"}
    assert sum(r["a"] == RARE for r in rows) == 1 and len(rows) == len(RARE_WORLD)
    fa = json.loads(Path("reports/avazu/align.json").read_text())["sources"]["x2"]["fields"]["a"]
    assert (fa["mapped"], fa["rare"], fa["ambiguous"], fa["x4_rare_values"]) == (2, 1, 0, 1)
    assert fa["rare_threshold"] == 20 and fa["rare_consistent"] is True


# ---------------------------------------------------------------------------------------------- the matcher


@pytest.mark.parametrize("rare_min_count", [None, 20])
def test_single_content_bucket_is_rare_not_a_guess(tmp_path, rare_min_count):
    """The library call, threshold inferred (the rarest kept value: 20) or given: the exact mapping."""
    src, x4, expected = make_world(tmp_path, RARE_WORLD, ns="x2:", with_weekday=True, merged={"a": {"a7"}})
    al = align(src, x4, rare_token="x2:0", rare_min_count=rare_min_count)
    assert mapping(al) == expected
    assert al.report()["fields"]["a"]["rare_threshold"] == 20
