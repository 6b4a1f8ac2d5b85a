"""The report stage: figures from metric files, absent inputs said so, a self-contained page that headless
Chromium renders with every image loaded."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from pipeline import report as rp
from pipeline.ctr import study
from tests.conftest import run_cli
from tests.test_study import record


def write(root: Path, rel: str, obj) -> None:
    p = root / rel
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text(json.dumps(obj))


@pytest.fixture
def reports(tmp_path):
    root = tmp_path / "reports"
    prov = {"dataset": "avazu (x4; synthetic)", "synthetic": True, "split": "test", "protocol": "pointwise CTR"}
    write(root, "avazu/baseline.json", dict(prov, model="deepfm", optimizer="helen", metrics={
        "x4/test": {"auc": 0.80, "logloss": 0.37, "oracle_auc": 0.85, "oracle_logloss": 0.33}}))
    write(root, "avazu/baseline_curve.json", [{"epoch": 1, "step": 10, "valid_auc": 0.7},
                                              {"epoch": 2, "step": 20, "valid_auc": 0.75}])
    write(root, "studies/helen/optimizers.json", dict(prov, model="deepfm", headline_split="x4/test", optimizers={
        n: {"auc": a, "logloss": 0.4, "oracle_auc": 0.85, "best_epoch": 1, "wall_seconds": 3.0}
        for n, a in (("adam", 0.79), ("sam", 0.795), ("helen", 0.80))}))
    runs = [record(m, o, a) for m, o, a in (("dnn", "adam", 0.79), ("dnn", "sam", 0.78), ("dnn", "helen", 0.77),
                                           ("pnn", "adam", 0.79), ("pnn", "sam", 0.785), ("pnn", "helen", 0.80))]
    runs += [record("pnn", "helen", 0.78 + r / 10, rho=r, variant=v, grid=True) for r in (0.01, 0.1)
             for v in ("release", "recdag")]
    write(root, "studies/helen/table.json", study.study_table(runs))
    write(root, "studies/helen/rho.json", study.rho_curve(runs))
    write(root, "sweeps/sweep_optim_rho.json", {"rows": []})              # a sweep: not the report's input
    (root / "tb" / "baseline").mkdir(parents=True)
    (root / "tb" / "baseline" / "ignored.json").write_text("not json")      # TensorBoard folder is skipped
    return root


def test_figures_drawn_or_explained(reports):
    metrics = rp.load_metrics(reports)
    assert set(metrics) == {"avazu/baseline.json", "avazu/baseline_curve.json", "studies/helen/optimizers.json",
                            "studies/helen/table.json", "studies/helen/rho.json"}
    figs = {f.name: f for s in rp.build(metrics) for f in s.figures}
    for name in ("training_curves", "avazu_optimizers", "helen_table", "helen_rho"):
        assert figs[name].png.startswith(b"\x89PNG"), name
    assert "Helen best for 1 of 2 models" in figs["helen_table"].caption
    assert "dvc repro studies/helen/dvc.yaml" in figs["helen_sharpness"].missing
    assert "dvc repro studies/amazon/dvc.yaml" in figs["amazon_transfer"].missing
    assert "dvc repro studies/amazon/dvc.yaml" in figs["amazon_scaling_study"].missing
    missing = figs["avazu_llm_vs_baseline"]
    assert not missing.png and "evaluation.json" in missing.missing
    # every number carries its provenance
    assert "synthetic data" in figs["avazu_optimizers"].caption and "pointwise CTR" in figs["avazu_optimizers"].caption


def test_report_stage_writes_self_contained_page(reports):
    assert run_cli("report", "--reports-dir", str(reports)) == 0
    page = (reports / "index.html").read_text()
    assert not re.search(r"""(src|href)\s*=\s*['"](?!data:|#)""", page), "the page must not reference files or URLs"
    assert page.count("data:image/png;base64,") == 4
    assert "not drawn" in page and "synthetic" in page
    md = (reports / "summary.md").read_text()
    assert "plots/avazu_optimizers.png" in md and "| helen | 0.8000" in md
    assert sorted(p.name for p in (reports / "plots").iterdir()) == ["avazu_optimizers.png", "helen_rho.png",
                                                                    "helen_table.png", "training_curves.png"]


def _chromium() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        if shutil.which(name):
            return shutil.which(name)
    return None


def test_page_renders_in_headless_chromium(reports, tmp_path):
    browser = _chromium()
    if browser is None:
        pytest.skip("Chromium is not installed (bin/test installs Debian's `chromium` when apt-get can; "
                    "it could not here)")
    assert run_cli("report", "--reports-dir", str(reports)) == 0
    # a copy of the page with a probe that writes, once loaded, how many images decoded into the title
    probe = ("<script>window.addEventListener('load',()=>{const im=[...document.images];"
             "const t=performance.getEntriesByType('navigation')[0];"
             "document.title='IMAGES '+im.filter(i=>i.complete&&i.naturalWidth>0).length+'/'+im.length"
             "+' FIRST '+document.querySelector('table').id+' MS '+Math.round(t?t.loadEventStart:0);});</script>")
    page = tmp_path / "probe.html"
    page.write_text((reports / "index.html").read_text().replace("</body>", probe + "</body>"))
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             f"--user-data-dir={tmp_path / 'profile'}"]
    r = subprocess.run([browser, *flags, "--virtual-time-budget=5000", "--dump-dom", page.as_uri()],
                       capture_output=True, text=True, timeout=120)
    m = re.search(r"<title>IMAGES (\d+)/(\d+) FIRST (\w*) MS (\d+)</title>", r.stdout)
    assert m, f"Chromium did not render the page:\n{r.stderr[-2000:]}"
    assert m.group(1) == m.group(2) == "4"
    assert m.group(3) == "findings"                          # "what this run found" is the page's first table
    assert int(m.group(4)) < 1000, f"the page took {m.group(4)} ms to load"   # opens in under a second
    shot = tmp_path / "report.png"
    subprocess.run([browser, *flags, f"--screenshot={shot}", "--window-size=1200,2400", page.as_uri()],
                   capture_output=True, timeout=120)
    assert shot.is_file() and shot.stat().st_size > 10_000


def test_amazon_study_figures_and_headline(tmp_path):
    """The Amazon study's transfer figure (fraction × scratch/pretrained × recipe) and scaling figure with its
    fitted exponents are drawn from reports/studies/amazon/*.json, with their provenance."""
    from pipeline.seqrec import study as ss

    prov = {"protocol": "full_ranking", "split": "leave-one-out", "synthetic": True}
    cells = [{**prov, "recipe": r, "dataset": "beauty", "user_frac": f, "train_users": int(f * 100), "users": 100,
              "scratch": {"ndcg@10": 0.02 + f / 10}, "pretrained": {"ndcg@10": 0.1 + f / 20}, "oracle_ndcg@10": 0.17}
             for r in ("srt", "recdag") for f in (0.05, 1.0)]
    rows = [{**prov, "protocol": "sampled_10000", "recipe": "recdag", "size": z, "scale": sc, "interactions": sc,
             "params_non_embedding": n, "test_ndcg@5": y, "oracle_test_ndcg@5": 0.14}
            for sc, z, n, y in ((20000, "1x32", 1.5e4, 0.03), (20000, "2x64", 1.1e5, 0.04), (80000, "1x32", 1.5e4, 0.08),
                                (80000, "2x64", 1.1e5, 0.09))]
    root = tmp_path / "reports"
    write(root, "studies/amazon/transfer.json", ss.transfer_table(cells))
    write(root, "studies/amazon/scaling.json", ss.scaling_table(rows))
    metrics = rp.load_metrics(root)
    figs = {f.name: f for s in rp.build(metrics) for f in s.figures}
    for name in ("amazon_transfer", "amazon_scaling_study"):
        assert figs[name].png.startswith(b"\x89PNG"), name
    assert "in 2 of 2 (dataset, recipe) pairs" in figs["amazon_transfer"].caption
    assert "full_ranking" in figs["amazon_transfer"].caption and "synthetic data" in figs["amazon_transfer"].caption
    assert "recdag 20,000: alpha" in figs["amazon_scaling_study"].caption
    md = "\n".join(rp.headline(metrics))
    assert "transfer where data is scarce" in md and "| beauty | srt | 0.05 |" in md


def test_findings_first_then_provenance_and_small_multiples(reports, tmp_path):
    """The page opens on the provenance block and the "what this run found" table (a row per seed claim
    present, with a verdict and a link to its section); curves are one panel per metric kind."""
    write(reports, "tenrec/retrieval_curve.json", [{"epoch": 1, "step": 5, "valid_recall@100": 0.1},
                                                   {"epoch": 2, "step": 10, "valid_recall@100": 0.15}])
    metrics = rp.load_metrics(reports)
    found = rp.findings(metrics)
    assert [(f.branch, f.verdict) for f in found] == [("Avazu / Helen", "not reproduced")]
    assert "Helen best for 1 of 2 models" in found[0].measured and "Adam 0.7900" in found[0].measured
    curves = rp.training_curves(metrics)
    assert curves.png.startswith(b"\x89PNG") and "2 panels: valid_auc, valid_recall@100" in curves.caption
    prov = {"commit": "abc1234", "dirty": True, "date_utc": "2026-01-01 00:00", "python": "3.11",
            "params_changed": {"optim.rho": {"committed": 0.05, "used": 0.1}}, "versions": {"torch": "2.13.0"},
            "cpu": "x × 2", "gpu": None, "metrics_are_the_pin": False}
    page = rp.render_html(rp.build(metrics), True, found, prov)
    assert page.index("id='provenance'") < page.index("<table id='findings'") == page.index("<table")
    assert "optim.rho: 0.05 → 0.1" in page and "with uncommitted changes" in page and "differ from HEAD" in page
    assert f"href='#{rp.anchor('Helen study (studies/helen)')}'" in page
    assert f"<h2 id='{rp.anchor('Helen study (studies/helen)')}'>" in page
    md = rp.render_markdown(rp.build(metrics), "plots", rp.headline(metrics), found, prov)
    assert md.index("## What this run found") < md.index("## Headline")


def test_provenance_reads_git_and_params(tmp_path):
    from tests.conftest import run_in as sh

    (tmp_path / "params.yaml").write_text("seed: 1\noptim:\n  rho: 0.05\n")
    sh(tmp_path, "git", "init", "-q")
    sh(tmp_path, "git", "add", "params.yaml")
    sh(tmp_path, "git", "-c", "user.email=t@t", "-c", "user.name=t", "commit", "-qm", "p")
    p = rp.provenance_info(tmp_path)
    assert p["commit"] and p["dirty"] is False and p["params_changed"] == {} and p["metrics_are_the_pin"] is True
    (tmp_path / "params.yaml").write_text("seed: 1\noptim:\n  rho: 0.1\n")
    p = rp.provenance_info(tmp_path)
    assert p["dirty"] is True and p["params_changed"] == {"optim.rho": {"committed": 0.05, "used": 0.1}}
    assert p["versions"]["torch"] and p["python"]
    nowhere = tmp_path.parent / f"{tmp_path.name}-not-a-repo"
    nowhere.mkdir()
    outside = rp.provenance_info(nowhere)
    assert outside["commit"] is None and outside["params_changed"] is None and outside["dirty"] is None


def test_sweeps_get_a_section_with_their_plot_and_table(reports):
    """A `recdag sweep` result under reports/sweeps (kind recdag-sweep) becomes a section: its PNG and a table
    of every experiment's params and metrics; other JSON there is ignored."""
    png = rp._fig_png(lambda fig, ax: ax.plot([0, 1], [0, 1]))
    d = {"kind": "recdag-sweep", "version": 1, "name": "sweep_optim_rho",
         "params": [{"label": "optim.rho", "file": "params.yaml", "key": "optim.rho"}],
         "metrics": [{"label": "auc", "file": "reports/avazu/baseline.json", "key": "metrics.x4/test.auc"}],
         "commits": [{"rev": "cff9bcb", "name": "main"}], "note": "dataset: avazu · protocol: pointwise CTR",
         "rows": [{"name": "exp-a", "params": {"optim.rho": 0.01}, "metrics": {"auc": 0.79}},
                  {"name": "exp-b", "params": {"optim.rho": 0.1}, "metrics": {"auc": 0.78}}]}
    write(reports, "sweeps/sweep_optim_rho_full.json", {**d, "name": "sweep_optim_rho_full"})
    (reports / "sweeps" / "sweep_optim_rho_full.png").write_bytes(png)
    sweeps = rp.load_sweeps(reports)
    assert list(sweeps) == ["sweep_optim_rho_full"]                  # sweep_optim_rho.json has no kind
    secs = {s.title: s for s in rp.build(rp.load_metrics(reports), sweeps=sweeps)}
    sw = secs["Sweeps (recdag sweep)"]
    assert sw.figures[0].png == png and "2 experiments" in sw.figures[0].caption and "main" in sw.figures[0].caption
    caption, header, rows = sw.tables[0]
    assert header == ["experiment", "optim.rho", "auc"] and rows[1][0] == "exp-b" and "pointwise CTR" in caption
    assert run_cli("report", "--reports-dir", str(reports)) == 0
    assert (reports / "plots" / "sweep_sweep_optim_rho_full.png").is_file()

