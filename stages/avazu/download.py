"""Stage avazu_download: the embedded world, reczoo's Hugging Face zips or a local folder -> data/avazu/raw."""

from __future__ import annotations

import os
from pathlib import Path

from pipeline.core.io import atomic_outputs, write_json
from pipeline.core.params import load_stage
from pipeline.ctr import download as dl
from pipeline.ctr.params import AvazuParams
from pipeline.ctr.schema import load_layouts
from stages.avazu.common import RAW, ParamsOpt

PARAMS = ("seed", "avazu.source", "avazu.sources", "avazu.local_dir", "avazu.hf_revision", "avazu.layouts",
          "avazu.synthetic", "avazu.verify_md5")


def download(params: str = ParamsOpt) -> None:
    """Fetch x1/x2/x4 (synthetic world, reczoo on Hugging Face, or a local folder) into data/avazu/raw."""
    p = load_stage(params, PARAMS, (AvazuParams,))
    a = p.avazu
    layouts = load_layouts(a.layouts)
    with atomic_outputs() as out:
        raw = out.dir(RAW)
        if a.source == "synthetic":
            s = a.synthetic
            manifest = dl.fetch_synthetic(a.sources, layouts, raw, rows=s.rows, seed=p.seed,
                                          mean_ctr=s.mean_ctr, rank=s.rank, temperature=s.temperature)
        elif a.source == "hf":
            manifest = dl.fetch_hf(a.sources, layouts, raw, a.hf_revision, verify=a.verify_md5)
        else:
            manifest = dl.fetch_local(a.sources, layouts, Path(os.path.expanduser(a.local_dir)), raw,
                                      verify=a.verify_md5)
        write_json(raw / "manifest.json", {"source": a.source, "sources": manifest})
