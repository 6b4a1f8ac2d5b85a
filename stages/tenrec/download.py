"""Stage tenrec_download: the embedded world or a user's manually downloaded Tenrec file -> data/tenrec/raw."""

from __future__ import annotations

import os
import shutil

from pipeline.core.io import atomic_outputs, md5_file, write_json
from pipeline.core.params import load_stage
from pipeline.tenrec import formats
from pipeline.tenrec.params import TenrecParams
from stages.tenrec.common import RAW, ParamsOpt

PARAMS = ("seed", "tenrec.source", "tenrec.scenario", "tenrec.local_dir", "tenrec.synthetic")


def download(params: str = ParamsOpt) -> None:
    """Write the synthetic world (``tenrec.source: synthetic``) or link ``tenrec.local_dir``'s
    <scenario>.csv or <scenario>.csv.gz (``local``; Tenrec is a manual download under CC BY-NC 4.0) into
    data/tenrec/raw, under its own name (prepare reads either)."""
    from pipeline.tenrec.synthetic import generate

    p = load_stage(params, PARAMS, (TenrecParams,))
    t = p.tenrec
    name = formats.csv_name(t.scenario)
    with atomic_outputs() as out:
        raw = out.dir(RAW)
        if t.source == "synthetic":
            s = t.synthetic
            stats = generate(raw, users=s.users, items=s.items, rows=s.rows, categories=s.categories, rank=s.rank,
                             mean_ctr=s.mean_ctr, like_rate=s.like_rate, missing_category=s.missing_category,
                             signal=s.signal, seed=p.seed, scenario=t.scenario)
            origin = {"source": "synthetic", "stats": stats}
        else:
            src = formats.find_log(t.local_dir, t.scenario,
                                   expected=f"{name} (or {name}.gz) from the Tenrec download in tenrec.local_dir")
            formats.check_header(src)
            name = src.name
            try:
                os.link(src, raw / name)
            except OSError:
                shutil.copyfile(src, raw / name)
            origin = {"source": "local", "path": str(src.resolve())}
        origin.update(scenario=t.scenario, file=name, bytes=(raw / name).stat().st_size,
                      md5=md5_file(raw / name))
        write_json(raw / "manifest.json", origin)
