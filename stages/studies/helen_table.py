"""Stage helen_table (studies/helen/dvc.yaml): the model × optimizer table and the rho grid from the runs."""

from __future__ import annotations

from pipeline.core.io import atomic_outputs, read_json, write_json
from stages.studies.common import HELEN_REPORTS, HELEN_RUNS

PARAMS: tuple[str, ...] = ()


def helen_table() -> None:
    """reports/studies/helen/{table.json, table.md, rho.json, rho.png} from reports/studies/helen/runs/*.json."""
    from pipeline.core.errors import DataError
    from pipeline.ctr import study

    files = sorted(HELEN_RUNS.glob("*.json"))
    if not files:
        raise DataError(HELEN_RUNS, "no study runs", expected="the outputs of the helen_run / helen_rho stages")
    runs = [read_json(f) for f in files]
    table, curve = study.study_table(runs), study.rho_curve(runs)
    with atomic_outputs() as out:
        write_json(out.file(HELEN_REPORTS / "table.json"), table)
        write_json(out.file(HELEN_REPORTS / "rho.json"), curve)
        out.file(HELEN_REPORTS / "table.md").write_text(study.table_markdown(table, curve), encoding="utf-8")
        out.file(HELEN_REPORTS / "rho.png").write_bytes(study.rho_figure(curve))
