"""Stage llm_study_table (studies/llm/dvc.yaml): the three LLMs side by side, beside the baseline and oracle."""

from __future__ import annotations

from pipeline.core.errors import DataError
from pipeline.core.io import atomic_outputs, read_json, write_json
from pipeline.ctr.llm_study import VARIANTS, study_table, table_markdown
from stages.studies.llm_common import LLM_STUDY_REPORTS


def llm_table() -> None:
    """reports/studies/llm/table.{json,md} from every variant's run file."""
    runs = {}
    for v in VARIANTS:
        f = LLM_STUDY_REPORTS / "runs" / f"{v}.json"
        if not f.is_file():
            raise DataError(f, "study run missing", expected=f"the output of llm_study_run@{v}")
        runs[v] = read_json(f)
    table = study_table(runs)
    with atomic_outputs() as out:
        write_json(out.file(LLM_STUDY_REPORTS / "table.json"), table)
        out.file(LLM_STUDY_REPORTS / "table.md").write_text(table_markdown(table), encoding="utf-8")
