"""Stage amazon_download: the synthetic world (default) or the user's files, in the real formats."""

from __future__ import annotations

import logging
import os
import shutil
from pathlib import Path

from pipeline.core.errors import DataError
from pipeline.core.io import atomic_outputs, check_compression, write_json
from pipeline.core.params import load_stage
from pipeline.seqrec.params import AmazonParams
from stages.amazon.common import RAW, ParamsOpt

log = logging.getLogger(__name__)

PARAMS = ("seed", "amazon.source", "amazon.synthetic", "amazon.local", "amazon.finetune_datasets")


def _sources(a) -> list[tuple[str, Path, str]]:
    """(raw sub-path, the user's file or folder, its params key) of amazon.source=local, all checked first
    (before any output is started): missing, empty, gzip bytes under a plain name -> DataError naming the
    user's path. ``~`` is expanded (the params layer does it too; expanding twice is harmless)."""
    out = []
    for sub, key, files in (("ratings", "amazon.local.ratings", a.local.ratings),
                            ("meta", "amazon.local.metadata", a.local.metadata)):
        for k, f in enumerate(files):
            src = Path(f).expanduser()
            out.append((f"{sub}/{k:03d}-{src.name}", src, key))
    for n in a.finetune_datasets:
        src = Path(getattr(a.local, n)).expanduser()
        rel = f"finetune/{n}" + ("" if src.is_dir() else "".join(src.suffixes[-2:]) or ".txt")
        out.append((rel, src, f"amazon.local.{n}"))
    for _, src, key in out:
        if not src.exists():
            raise DataError(src, f"not found (set in params.yaml {key})")
        if src.is_file():
            if src.stat().st_size == 0:
                raise DataError(src, f"file is empty (set in params.yaml {key})")
            check_compression(src)
    return out


def _link(src: Path, dst: Path) -> None:
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
    sources = _sources(a) if a.source == "local" else []
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
            for rel, src, _ in sources:
                _link(src, d / rel)
            for n in a.finetune_datasets:
                finetune[n] = {"format": a.local.finetune_format, "path": next(
                    rel for rel, _, key in sources if key == f"amazon.local.{n}")}
        write_json(d / "manifest.json", {"source": a.source, "finetune": finetune, "world": info,
                                         "ratings": sorted(f.name for f in (d / "ratings").iterdir()),
                                         "meta": sorted(f.name for f in (d / "meta").iterdir())})
