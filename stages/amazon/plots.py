"""Stage amazon_plots: the scaling curve and fine-tuning scratch vs pretrained (DVC plot JSON + PNG)."""

from __future__ import annotations

from pipeline.core.errors import DataError
from pipeline.core.io import atomic_outputs, read_json, write_json
from pipeline.core.params import load_stage
from pipeline.seqrec import plots as lib
from pipeline.seqrec.params import AmazonParams, PretrainParams, run_name
from stages.amazon.common import REPORTS, ParamsOpt

PLOTS = REPORTS / "plots"

PARAMS = ("amazon.scales", "amazon.finetune_datasets", "pretrain.sizes")


def _read(path):
    if not path.is_file():
        raise DataError(path, "missing report", expected="the output of the pretrain / finetune stage")
    return read_json(path)


def plots(params: str = ParamsOpt) -> None:
    """reports/amazon/plots/{scaling,finetune}.{json,png} and tables.md (the tables of the closing note)."""
    p = load_stage(params, PARAMS, (AmazonParams, PretrainParams))
    scaling = lib.scaling_rows({(size, scale): _read(REPORTS / "pretrain" / f"{run_name(scale, size)}.json")
                                for size in p.pretrain.sizes for scale in p.amazon.scales})
    fine = lib.finetune_rows({d: _read(REPORTS / "finetune" / f"{d}.json") for d in p.amazon.finetune_datasets})
    with atomic_outputs() as out:
        write_json(out.file(PLOTS / "scaling.json"), scaling)
        write_json(out.file(PLOTS / "finetune.json"), fine)
        lib.scaling_png(scaling, out.file(PLOTS / "scaling.png"))
        lib.finetune_png(fine, out.file(PLOTS / "finetune.png"))
        out.file(PLOTS / "tables.md").write_text(lib.tables(scaling, fine), encoding="utf-8")
