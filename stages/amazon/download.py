"""Stage amazon_download: the synthetic world (default) or the user's files, in the real formats."""

from __future__ import annotations

import logging
import os
import shutil
from pathlib import Path

from pipeline.core.errors import DataError
from pipeline.core.io import atomic_outputs, write_json
from pipeline.core.params import load_stage
from pipeline.seqrec.params import AmazonParams
from stages.amazon.common import RAW, ParamsOpt

log = logging.getLogger(__name__)

PARAMS = ("seed", "amazon.source", "amazon.synthetic", "amazon.local", "amazon.finetune_datasets")


def _link(src: Path, dst: Path) -> None:
    if not src.exists():
        raise DataError(src, "not found (set in params.yaml amazon.local)")
    if src.is_dir():
        shutil.copytree(src, dst, copy_function=_link_file)
    else:
        _link_file(src, dst)


def _link_file(src, dst) -> None:
    try:
        os.link(src, dst)                     # the multi-GB dumps: no copy where the filesystem allows
    except OSError:
        shutil.copy2(src, dst)


def download(params: str = ParamsOpt) -> None:
    """Write ``data/amazon/raw``: ratings/, meta/, finetune/ (and oracle/ on synthetic data), manifest.json."""
    p = load_stage(params, PARAMS, (AmazonParams,))
    a = p.amazon
    with atomic_outputs() as out:
        d = out.dir(RAW)
        finetune = {}
        if a.source == "synthetic":
            from pipeline.seqrec.synthetic import World

            info = World(a.synthetic, p.seed).write(d)
            finetune = {n: {"format": "reviews", "path": f"finetune/{n}.json"} for n in ("beauty", "sports")}
        else:
            info = {}
            (d / "ratings").mkdir()
            (d / "meta").mkdir()
            (d / "finetune").mkdir()
            for sub, files in (("ratings", a.local.ratings), ("meta", a.local.metadata)):
                for k, f in enumerate(files):
                    src = Path(f).expanduser()
                    _link(src, d / sub / f"{k:03d}-{src.name}")
            for n in a.finetune_datasets:
                src = Path(getattr(a.local, n)).expanduser()
                rel = f"finetune/{n}" + ("" if src.is_dir() else "".join(src.suffixes[-2:]) or ".txt")
                _link(src, d / rel)
                finetune[n] = {"format": a.local.finetune_format, "path": rel}
        write_json(d / "manifest.json", {"source": a.source, "finetune": finetune, "world": info,
                                         "ratings": sorted(f.name for f in (d / "ratings").iterdir()),
                                         "meta": sorted(f.name for f in (d / "meta").iterdir())})
