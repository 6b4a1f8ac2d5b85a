"""Stage avazu_leakage: which rows of every training / validation set are x4 valid or test events.

Once x1 / x2 are aligned to x4's tokens, the seed's protocol (LLM-CTR trained on x1 / x2 samples, evaluated
on x4 test) trains on most of its test rows: every source is a re-split of the same 40.4 M events. This
stage hashes every row (``pipeline.ctr.leakage``), marks the rows of each encoded dataset's train / valid
split whose event is also in x4 valid or test (one boolean ``.npy`` per split, row-aligned with the encoded
parquet), and reports the sizes: the LLM-CTR phases drop the marked rows under the ``leak_free`` protocol
and keep them under ``seed_leaky``.
"""

from __future__ import annotations

import logging

from pipeline.core.io import atomic_outputs, write_json
from pipeline.core.params import load_stage
from pipeline.ctr.params import AvazuParams
from pipeline.ctr.schema import load_layouts
from stages.avazu.common import LEAKAGE, REPORTS, ParamsOpt
from stages.avazu.datasets import all_datasets

log = logging.getLogger(__name__)

PARAMS = ("avazu.sources", "avazu.align", "avazu.layouts", "avazu.batch_rows", "avazu.split_valid.sources",
          "avazu.sample")
EVAL = ("valid", "test")


def leakage(params: str = ParamsOpt) -> None:
    """Masks of the x4 valid / test events in every other train / valid split; reports/avazu/leakage.json."""
    import numpy as np

    from pipeline.ctr import leakage as lk

    a = load_stage(params, PARAMS, (AvazuParams,)).avazu
    layouts = load_layouts(a.layouts)
    datasets = all_datasets(a, layouts)
    fields = lk.event_columns(layouts.fields)
    x4 = datasets.get("x4", {})
    evals = {f"x4/{sp}": lk.row_hashes(x4[sp], fields, a.batch_rows) for sp in EVAL if sp in x4}
    trains = {f"{name}/{sp}": lk.row_hashes(path, fields, a.batch_rows) for name, splits in datasets.items()
              for sp, path in splits.items() if sp != "test" and f"{name}/{sp}" not in evals}
    report = lk.leak_report(trains, evals)
    report.update(dataset=f"avazu ({', '.join(a.sources)})", split="train / valid vs x4 valid + test",
                  protocol="same event = equal in the 21 fields, hour_of_day and label (after avazu_align)",
                  aligned=bool(a.align))
    masks = {k: lk.event_mask(datasets[k.split("/")[0]][k.split("/")[1]], h, list(evals.values()), EVAL)
             for k, h in trains.items()}
    lk.record_masks(report, masks, {k: lk.mask_source(datasets[k.split("/")[0]][k.split("/")[1]]) for k in masks})
    with atomic_outputs() as out:
        d = out.dir(LEAKAGE)
        for key, m in masks.items():
            name, sp = key.split("/")
            (d / name).mkdir(exist_ok=True)
            np.save(d / name / f"{sp}.npy", m)
        write_json(out.file(REPORTS / "leakage.json"), report)
    log.info("leakage: %s", {k: round(v["excluded_share"], 4) for k, v in report["train"].items()})
