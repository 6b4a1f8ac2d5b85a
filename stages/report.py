"""Stage report: every branch's metrics → reports/index.html (self-contained), reports/summary.md, PNGs."""

from __future__ import annotations

import logging
from pathlib import Path

import typer

from pipeline.core.io import atomic_outputs

log = logging.getLogger(__name__)
REPORTS = Path("reports")


def report(reports_dir: str = typer.Option(str(REPORTS), help="folder holding the branches' metrics")) -> None:
    """Render the cross-branch report from whatever metric files exist (absent branches are said so)."""
    from pipeline import report as rp

    root = Path(reports_dir)
    metrics = rp.load_metrics(root)
    sections = rp.build(metrics, sweeps=rp.load_sweeps(root))
    synthetic_any = any(isinstance(m, dict) and m.get("synthetic") for m in metrics.values())
    found, prov = rp.findings(metrics), rp.provenance_info(Path.cwd())
    with atomic_outputs() as out:
        plots = out.dir(root / "plots")
        for s in sections:
            for f in s.figures:
                if f.png:
                    (plots / f"{f.name}.png").write_bytes(f.png)
        out_html = out.file(root / "index.html")
        out_html.write_text(rp.render_html(sections, synthetic_any, found, prov), encoding="utf-8")
        out_md = out.file(root / "summary.md")
        out_md.write_text(rp.render_markdown(sections, "plots", rp.headline(metrics), found, prov), encoding="utf-8")
    drawn = sum(bool(f.png) for s in sections for f in s.figures)
    log.info("report: %d figures drawn, %d metric files → %s", drawn, len(metrics), root / "index.html")
