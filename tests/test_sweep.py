"""`recdag sweep`: DVC experiments (`dvc exp show --json`) -> table + figure of a metric against a param."""

from __future__ import annotations

import copy
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from pipeline import sweep as sw
from pipeline.core.errors import ConfigError, RecdagError
from tests.conftest import ROOT, leftovers, run_cli

METRICS = "reports/avazu/baseline.json"
DEFAULT = f"{METRICS}:metrics.x4/test.auc"
HEAD = "c" * 40
OLD = "0" * 40
PNG = b"\x89PNG\r\n\x1a\n"


# ------------------------------------------------------------------ a hand-written `dvc exp show --json` (DVC 3.x)


def data(rev: str, rho, auc, optimizer="helen", extra_metrics=None) -> dict:
    metrics = {"x4/test": {"auc": auc, "logloss": 0.4}, "x4/valid": {"auc": auc - 0.01}}
    return {"rev": rev, "timestamp": "2025-01-01T00:00:00",
            "params": {"params.yaml": {"data": {"seed": 1, "optim": {"name": optimizer, "rho": rho}}}},
            "metrics": {METRICS: {"data": {"dataset": "toy", "split": "test", "protocol": "toy",
                                           "metrics": metrics}},
                        **(extra_metrics or {})},
            "deps": {}, "outs": {}, "meta": {}}


def exp(name: str, rev: str, rho, auc, state="success", error=None, **kw) -> dict:
    return {"name": name,
            "revs": [{"rev": rev, "name": name, "data": data(rev, rho, auc, **kw), "error": error,
                      "experiments": None}],
            "executor": None if state is None else {"state": state, "name": "dvc-task", "local": {}}}


def commit(rev, name, rho, auc, experiments) -> dict:
    return {"rev": rev, "name": name, "data": data(rev, rho, auc), "error": None, "experiments": experiments}


def dump() -> list:
    failed = {"msg": "Experiment run failed", "type": ""}
    return [
        # the workspace after a workspace `dvc exp run`: never a row
        {"rev": "workspace", "name": None, "data": data("workspace", 0.3, 0.5), "error": None,
         "experiments": None},
        commit(HEAD, "main", 0.05, 0.80, [
            exp("big-rho", "b" * 40, 0.1, 0.7975),
            exp("small-rho", "a" * 40, 0.01, 0.7984, state=None),        # workspace run: no executor
            exp("same-rho", "d" * 40, 0.05, 0.801),                      # same rho as the baseline: kept
            exp("crashed", "e" * 40, 0.5, 0.80, state="failed", error=failed),
            exp("waiting", "f" * 40, 0.3, 0.80, state="queued"),
            exp("busy", "9" * 40, 0.2, 0.80, state="running"),
        ]),
        commit(OLD, None, 0.05, 0.70, [exp("old-exp", "1" * 40, 0.02, 0.69)]),
    ]


def save(tmp_path: Path, obj) -> Path:
    p = tmp_path / "exp_show.json"
    p.write_text(json.dumps(obj), encoding="utf-8")
    return p


# ------------------------------------------------------------------ parsing


def test_rows_baseline_skips_and_sorting():
    rep = sw.build(dump(), ["optim.rho"])
    names = [r["name"] for r in rep["rows"]]
    assert names == ["small-rho", "baseline", "same-rho", "big-rho"]          # by rho, baseline first on ties
    rho = [r["params"]["optim.rho"] for r in rep["rows"]]
    auc = [r["metrics"][DEFAULT] for r in rep["rows"]]
    assert rho == [0.01, 0.05, 0.05, 0.1] and auc == [0.7984, 0.80, 0.801, 0.7975]
    base = rep["rows"][1]
    assert base["baseline"] and base["rev"] == HEAD and not any(r["baseline"] for r in rep["rows"][2:])
    assert rep["skipped"] == {"failed": 1, "queued": 1, "running": 1}
    assert rep["commit"] == {"rev": HEAD, "name": "main"}
    assert all(r["commit"] == HEAD for r in rep["rows"])                       # the old commit is ignored
    assert rep["name"] == "sweep_optim_rho" and rep["kind"] == sw.KIND
    assert rep["metrics"][0] == {"label": DEFAULT, "file": METRICS, "key": "metrics.x4/test.auc",
                             "dataset": "toy", "split": "test", "protocol": "toy"}
    assert rep["note"] == "dataset: toy · split: test · protocol: toy"
    assert rep["params"] == [{"label": "optim.rho", "file": "params.yaml", "key": "optim.rho"}]


def test_all_commits_adds_other_commits():
    rep = sw.build(dump(), ["optim.rho"], all_commits=True)
    names = [r["name"] for r in rep["rows"]]
    assert "old-exp" in names and "baseline (main)" in names and f"baseline ({OLD[:7]})" in names
    assert len(rep["commits"]) == 2


def test_lookup_longest_key_first_with_backtracking():
    tree = {"metrics": {"x4/test": {"auc": 0.8}, "x4": {"test": {"auc": 0.1}}},
            "a.b": {"c": 1}, "a": {"b": {"d": 2}}, "x.y": 3}
    assert sw.lookup(tree, "metrics.x4/test.auc") == 0.8
    assert sw.lookup(tree, "a.b.c") == 1                                      # longest key 'a.b'
    assert sw.lookup(tree, "a.b.d") == 2                                      # backtracks to 'a' -> 'b'
    assert sw.lookup(tree, "x.y") == 3
    assert sw.lookup(tree, "metrics.x4/test.nope") is sw._MISSING
    assert sw.lookup(tree, "metrics.x4/test.auc.more") is sw._MISSING


def test_several_metrics_and_bare_key():
    rep = sw.build(dump(), ["optim.rho"], [DEFAULT, "metrics.x4/valid.auc"])
    assert [m["label"] for m in rep["metrics"]] == [DEFAULT, f"{METRICS}:metrics.x4/valid.auc"]
    assert rep["rows"][1]["metrics"][f"{METRICS}:metrics.x4/valid.auc"] == pytest.approx(0.79)
    png = sw.sweep_figure(rep)
    assert png.startswith(PNG)


def test_two_params_group_by_the_second():
    d = dump()
    d[1]["experiments"] += [exp("adam-1", "2" * 40, 0.01, 0.78, optimizer="adam"),
                            exp("adam-2", "3" * 40, 0.1, 0.77, optimizer="adam")]
    rep = sw.build(d, ["optim.rho", "optim.name"])
    assert rep["name"] == "sweep_optim_rho_optim_name"
    got = [(r["params"]["optim.rho"], r["params"]["optim.name"], r["name"]) for r in rep["rows"]]
    assert got[:2] == [(0.01, "adam", "adam-1"), (0.01, "helen", "small-rho")]
    assert sw.sweep_figure(rep).startswith(PNG)
    md = sw.render_markdown(rep)
    assert "| experiment | rev | optim.rho | optim.name |" in md


def test_string_number_param_and_missing_metric_value():
    d = dump()
    d[1]["experiments"].append(exp("str-rho", "4" * 40, "1e-3", 0.7))
    del d[1]["experiments"][-1]["revs"][0]["data"]["metrics"][METRICS]       # that run has no metrics file
    rep = sw.build(d, ["optim.rho"])
    row = rep["rows"][0]
    assert row["name"] == "str-rho" and row["params"]["optim.rho"] == 0.001 and row["metrics"][DEFAULT] is None
    assert sw.sweep_figure(rep).startswith(PNG)                               # the None point is left out


# ------------------------------------------------------------------ the command


def test_cli_writes_json_md_png(tmp_path, capsys):
    src = save(tmp_path, dump())
    out = tmp_path / "sweeps"
    (out).mkdir()
    (out / "other.json").write_text('{"not": "a sweep"}')
    rc = run_cli("sweep", "--param", "optim.rho", "--from-json", str(src), "--out", str(out))
    assert rc == 0
    rep = json.loads((out / "sweep_optim_rho.json").read_text())
    assert [r["name"] for r in rep["rows"]] == ["small-rho", "baseline", "same-rho", "big-rho"]
    md = (out / "sweep_optim_rho.md").read_text()
    table = [line for line in md.splitlines() if line.startswith("| ")][1:]
    assert [line.split(" | ")[0] for line in table] == ["| small-rho", "| **baseline**", "| same-rho", "| big-rho"]
    assert "skipped: 1 failed, 1 queued, 1 running" in md and "dataset: toy · split: test · protocol: toy" in md
    assert (out / "sweep_optim_rho.png").read_bytes().startswith(PNG)
    assert leftovers(tmp_path) == []
    found = sw.find_sweeps(out)
    assert [f["name"] for f in found] == ["sweep_optim_rho"]
    assert sw.sweep_figure(found[0]).startswith(PNG)
    assert sw.find_sweeps(tmp_path / "absent") == []


def test_cli_name_and_log_x(tmp_path):
    src = save(tmp_path, dump())
    rc = run_cli("sweep", "--param", "optim.rho", "--metric", f"{METRICS}:metrics.x4/test.logloss",
                 "--name", "rho_ll", "--from-json", str(src), "--out", str(tmp_path))
    assert rc == 0
    rep = json.loads((tmp_path / "rho_ll.json").read_text())
    assert rep["metrics"][0]["key"] == "metrics.x4/test.logloss" and (tmp_path / "rho_ll.png").exists()


def _only_failures() -> list:
    d = dump()
    d[1]["experiments"] = [e for e in d[1]["experiments"] if (e["executor"] or {}).get("state") != "success"
                           and e["executor"] is not None]
    return d


@pytest.mark.parametrize("args, dump_fn, expected", [
    (["--param", "optim.rhoo"], dump, "unknown param 'optim.rhoo'"),
    (["--param", "optim.rho", "--metric", f"{METRICS}:metrics.x4/test.aucc"], dump,
     "unknown metric key 'metrics.x4/test.aucc'"),
    (["--param", "optim.rho", "--metric", "reports/nope.json:metrics.auc"], dump,
     "unknown metrics file 'reports/nope.json'"),
    (["--param", "optim.rho", "--metric", f"{METRICS}:metrics.x4/test"], dump, "is not a number but a dict"),
    (["--param", "optim.name"], dump, "param 'optim.name' is not numeric"),
    (["--param", "optim.rho"], _only_failures, "no finished experiments for commit ccccccc (main) "
                                               "(1 failed, 1 queued, 1 running skipped)"),
    (["--param", "optim.rho"], lambda: [dump()[0]], "lists no commit"),
    (["--param", "optim.rho", "--name", "../x"], dump, "must be a plain file name"),
])
def test_errors_are_one_line_exit_2(tmp_path, capsys, args, dump_fn, expected):
    src = save(tmp_path, dump_fn())
    rc = run_cli("sweep", *args, "--from-json", str(src), "--out", str(tmp_path / "out"))
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert rc == 2 and len(errors) == 1 and expected in errors[0], err
    assert "Traceback" not in err and not (tmp_path / "out").exists()


def test_error_suggests_close_keys():
    with pytest.raises(ConfigError, match=r"did you mean optim\.rho"):
        sw.build(dump(), ["optim.rhoo"])
    with pytest.raises(ConfigError, match=r"did you mean metrics\.x4/test\.auc"):
        sw.build(dump(), ["optim.rho"], [f"{METRICS}:metrics.x4/test.aucc"])


def test_bad_dump_file(tmp_path, capsys):
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    assert run_cli("sweep", "--param", "optim.rho", "--from-json", str(bad), "--out", str(tmp_path)) == 2
    assert "bad.json: is not valid JSON" in capsys.readouterr().err
    with pytest.raises(RecdagError, match="not a list of commits"):
        sw.read_exp_show(save(tmp_path, {"rev": "x"}))


def test_figure_rejects_other_json():
    with pytest.raises(RecdagError, match="not a recdag sweep"):
        sw.sweep_figure({"rows": []})


def test_report_is_not_mutated_by_rendering():
    rep = sw.build(dump(), ["optim.rho"])
    before = copy.deepcopy(rep)
    sw.render_markdown(rep), sw.sweep_figure(rep)
    assert rep == before and json.loads(json.dumps(rep)) == rep


# ------------------------------------------------------------------ end-to-end: a real DVC sweep


TRAIN = """\
import json, sys, yaml
rho = yaml.safe_load(open("params.yaml"))["optim"]["rho"]
if rho >= 0.5:
    sys.exit("rho too large")
json.dump({"dataset": "toy", "split": "test", "protocol": "toy",
           "metrics": {"x4/test": {"auc": 0.8 - (rho - 0.05) ** 2}}}, open("reports/avazu/baseline.json", "w"))
"""

DVC_YAML = """\
stages:
  train:
    cmd: python train.py
    deps: [train.py]
    params: [optim.rho]
    metrics:
      - reports/avazu/baseline.json:
          cache: false
"""


@pytest.mark.slow
def test_real_dvc_sweep(tmp_path):
    t0 = time.monotonic()
    repo = tmp_path / "repo"
    (repo / "reports" / "avazu").mkdir(parents=True)
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
               PYTHONPATH=str(ROOT), GIT_AUTHOR_NAME="t", GIT_AUTHOR_EMAIL="t@example.com",
               GIT_COMMITTER_NAME="t", GIT_COMMITTER_EMAIL="t@example.com", DVC_NO_ANALYTICS="1",
               DVC_SITE_CACHE_DIR=str(tmp_path / "dvc-site-cache"), TQDM_DISABLE="1")

    def sh(*cmd, ok=True):
        r = subprocess.run(cmd, cwd=repo, env=env, capture_output=True, text=True, timeout=180)
        assert not ok or r.returncode == 0, f"{' '.join(cmd)}:\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}"
        return r

    (repo / "params.yaml").write_text("optim:\n  name: helen\n  rho: 0.05\n")
    (repo / "train.py").write_text(TRAIN)
    (repo / "dvc.yaml").write_text(DVC_YAML)
    sh("git", "init", "-q")
    sh("git", "config", "user.name", "t")
    sh("git", "config", "user.email", "t@example.com")
    sh("dvc", "init", "-q")
    sh("dvc", "repro", "-q")
    sh("git", "add", "-A")
    sh("git", "commit", "-q", "-m", "baseline")
    sh("dvc", "exp", "run", "--queue", "-S", "optim.rho=0.01,0.1")          # one queued experiment per value
    sh("dvc", "exp", "run", "--queue", "-S", "optim.rho=0.5")               # this one fails
    sh("dvc", "exp", "run", "--run-all", ok=False)                          # non-zero: one experiment failed
    recdag = Path(sys.executable).parent / "recdag"
    cmd = [str(recdag)] if recdag.exists() else [sys.executable, "-m", "stages.cli"]
    sh(*cmd, "sweep", "--param", "optim.rho")

    rep = json.loads((repo / "reports" / "sweeps" / "sweep_optim_rho.json").read_text())
    got = [(r["params"]["optim.rho"], r["baseline"], round(r["metrics"][DEFAULT], 6)) for r in rep["rows"]]
    assert got == [(0.01, False, 0.7984), (0.05, True, 0.8), (0.1, False, 0.7975)], rep["rows"]
    assert rep["skipped"] == {"failed": 1}
    head = sh("git", "rev-parse", "HEAD").stdout.strip()
    assert rep["commit"]["rev"] == head and rep["rows"][1]["rev"] == head
    assert rep["note"] == "dataset: toy · split: test · protocol: toy"
    assert (repo / "reports" / "sweeps" / "sweep_optim_rho.png").read_bytes().startswith(PNG)
    md = (repo / "reports" / "sweeps" / "sweep_optim_rho.md").read_text()
    assert len([line for line in md.splitlines() if line.startswith("| ")]) == 1 + 3
    assert time.monotonic() - t0 < 120
