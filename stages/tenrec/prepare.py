"""Stage tenrec_prepare: the gen_ctr CTR view and the leave-last-out sequence view (streaming per user)."""

from __future__ import annotations

import logging

from pipeline.core.io import atomic_outputs, json_field, read_json, write_json
from pipeline.core.params import load_stage
from pipeline.tenrec import formats
from pipeline.tenrec.params import TenrecParams
from pipeline.tenrec.prepare import prepare as run_prepare
from pipeline.tenrec.reports import clean, dataset_name
from stages.tenrec.common import PREPARED, RAW, REPORTS, ParamsOpt

log = logging.getLogger(__name__)

PARAMS = ("tenrec.scenario", "tenrec.batch_rows", "tenrec.history_len", "tenrec.min_clicks")


def prepare(params: str = ParamsOpt) -> None:
    """data/tenrec/raw/<scenario>.csv (or .csv.gz) -> data/tenrec/prepared/{ctr,sequences,items}.parquet +
    report."""
    p = load_stage(params, PARAMS, (TenrecParams,))
    t = p.tenrec
    manifest = read_json(RAW / "manifest.json")
    source = json_field(manifest, "source", RAW / "manifest.json", str)
    log_path = formats.find_log(RAW, t.scenario)
    oracle = RAW / formats.oracle_name(t.scenario)
    with atomic_outputs() as out:
        d = out.dir(PREPARED)
        stats = run_prepare(log_path, d, batch_rows=t.batch_rows,
                            history_len=t.history_len, min_clicks=t.min_clicks,
                            oracle_path=oracle if oracle.is_file() else None)
        write_json(d / "meta.json", {**stats, "source": source, "scenario": t.scenario})
        report = {"dataset": dataset_name(t.scenario, stats["synthetic"]), "split": "all rows",
                  "protocol": "gen_ctr view (Tenrec's official gen_ctr.py) + leave-last-out sequences",
                  **{k: v for k, v in stats.items() if k != "category_ids"}}
        write_json(out.file(REPORTS / "prepare.json"), clean(report))
    log.info("prepared %d rows: %d CTR-view rows, %d users (%d with valid/test clicks)", stats["rows"],
             stats["ctr_rows"], stats["users"], stats["eval_users"])
