"""Stage avazu_align: the raw x4 token behind every anonymised x1 / x2 id, recovered from the data alone
(``pipeline.ctr.align``), written as aligned copies of x1 / x2 and the alignment report.

A no-op (an empty ``aligned/`` with its meta, and a report saying so) when ``avazu.align`` is false or x4 is
not among ``avazu.sources``: the later stages then read the normalized sources as published.
"""

from __future__ import annotations

import logging

from pipeline.core.io import atomic_outputs, read_table, write_json
from pipeline.core.params import load_stage
from pipeline.ctr.params import AvazuParams
from pipeline.ctr.schema import load_layouts
from stages.avazu.common import ALIGNED, NORMALIZED, RAW, REPORTS, ParamsOpt

log = logging.getLogger(__name__)

PARAMS = ("avazu.sources", "avazu.align", "avazu.layouts", "avazu.batch_rows")


def align(params: str = ParamsOpt) -> None:
    """x1 / x2 -> x4 tokens per field (fingerprints, then iterated row matching); reports/avazu/align.*."""
    import pyarrow.parquet as pq

    from pipeline.ctr import align as al
    from pipeline.ctr.synthetic import ALIGNMENT_TRUTH

    a = load_stage(params, PARAMS, (AvazuParams,)).avazu
    layouts = load_layouts(a.layouts)
    todo = [s for s in a.sources if s in ("x1", "x2")] if a.align and "x4" in a.sources else []
    files = {s: {sp: NORMALIZED / s / f"{sp}.parquet" for sp in layouts[s].splits} for s in [*todo, "x4"]}
    reports = {}
    with atomic_outputs() as out:
        d = out.dir(ALIGNED)
        for s in todo:
            lay = layouts[s]
            alignment = al.align_source(files[s], files["x4"], list(layouts.fields), rare_token=lay.rare_token,
                                        rare_min_count=lay.oov_min_count, batch_rows=a.batch_rows)
            (d / s).mkdir()
            rows = {sp: al.apply_alignment(alignment, path, d / s / f"{sp}.parquet", split=sp,
                                           batch_rows=a.batch_rows) for sp, path in files[s].items()}
            truth = RAW / s / ALIGNMENT_TRUTH
            reports[s] = dict(alignment.report(read_table(truth) if truth.is_file() else None), written=rows)
            del alignment                             # its per-row codes are not held while the next source aligns
        report = al.stage_report(reports, enabled=bool(todo), sources=list(a.sources), align=a.align)
        write_json(d / "meta.json", {"aligned": todo})
        write_json(out.file(REPORTS / "align.json"), report)
        out.file(REPORTS / "align.md").write_text(al.markdown(report), encoding="utf-8")
    log.info("align: %s", {s: r.get("occurrences_mapped") for s, r in reports.items()} or "no-op")
