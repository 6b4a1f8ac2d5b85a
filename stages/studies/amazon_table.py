"""Stage amazon_study_table (studies/amazon/dvc.yaml): the transfer table and figure, the scaling table with
its power-law fits and figure, from the study's run files."""

from __future__ import annotations

from pipeline.core.errors import DataError
from pipeline.core.io import atomic_outputs, read_json, write_json
from stages.studies.amazon_common import AMAZON_REPORTS, AMAZON_RUNS

PARAMS: tuple[str, ...] = ()


def amazon_table() -> None:
    """reports/studies/amazon/{transfer,scaling}.{json,png} and tables.md from reports/studies/amazon/runs/."""
    from pipeline.seqrec import study

    transfer = [read_json(f) for f in sorted(AMAZON_RUNS.glob("transfer-*.json"))]
    scaling = [read_json(f) for f in sorted(AMAZON_RUNS.glob("scaling-*.json"))]
    if not transfer or not scaling:
        raise DataError(AMAZON_RUNS, "no transfer or no scaling runs",
                        expected="the outputs of the amazon_transfer and amazon_scaling stages")
    strip = lambda r: {k: v for k, v in r.items() if k != "report"}        # noqa: E731 (the full report stays per run)
    t = study.transfer_table([strip(r) for r in transfer])
    s = study.scaling_table([strip(r) for r in scaling])
    with atomic_outputs() as out:
        write_json(out.file(AMAZON_REPORTS / "transfer.json"), t)
        write_json(out.file(AMAZON_REPORTS / "scaling.json"), s)
        out.file(AMAZON_REPORTS / "tables.md").write_text(study.tables_markdown(t, s), encoding="utf-8")
        out.file(AMAZON_REPORTS / "transfer.png").write_bytes(study.transfer_figure(t))
        out.file(AMAZON_REPORTS / "scaling.png").write_bytes(study.scaling_figure(s))
