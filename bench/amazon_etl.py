"""Amazon ETL benchmark: the pretraining-pool ETL (pipeline.seqrec.etl.build_pretrain_sets) on a synthetic
Amazon v2 ratings dump of ``--rows`` rows (default 10M) plus its metadata, against the bare pyarrow read of
the same CSV measured in the same run; projected to the real dump's 233.1M ratings.

The dump is written once (cached under bench/out/amazon_etl/) in the v2 formats the reader takes: ratings
``item,user,rating,timestamp`` without a header (items Zipf-distributed, users with a heavy-tailed number
of ratings, every user's ratings in time order across the file, as the real dump's are not), and one
metadata JSON line per item (``asin``, ``title``, ``brand``, ``category``) for 95 % of the items (the rest
are dropped by the ETL, as items without metadata are in the real dump). The ETL then runs with
params.yaml's ``amazon.min_user_interactions`` / ``batch_rows`` and ``--buckets`` (the real-data value is
256; fewer for a smaller dump) to the scaled sets ``--scales`` (default: 1 %, 10 % of the rows), each
in a fresh child process (bench/common.py), so the peak RSS is the ETL's own.

Reported: seconds, ratings rows/s, peak RSS, the pyarrow read floor (rows/s, same file), the ETL / read
ratio, and the projection to 233.1M rows (time linear in rows; the seed's ETL takes 9 h on 8 cores). Target
(issue 19): <= 30 min projected on these 2 cores with bounded memory.

``python bench/amazon_etl.py [--rows 10000000] [--buckets 64]`` prints the table and writes
bench/out/amazon_etl.md. A benchmark, not a test.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import OUT, ROOT, emit, fmt_s, run_child  # noqa: E402

REAL_ROWS = 233_100_000
SEED_ETL_HOURS = 9.0


def write_dump(folder: Path, rows: int, seed: int) -> dict:
    """ratings.csv + meta.json of a synthetic v2 dump (vectorised; about 1M rows/s)."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.csv as pacsv

    g = np.random.default_rng(seed)
    n_items = max(1000, rows // 20)
    n_users = max(100, rows // 9)
    folder.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    chunk = 2_000_000
    opts = pacsv.WriteOptions(include_header=False)
    with pacsv.CSVWriter(folder / "ratings.csv", pa.schema([("item", pa.string()), ("user", pa.string()),
                                                           ("rating", pa.float32()), ("timestamp", pa.int64())]),
                         write_options=opts) as w:
        for a in range(0, rows, chunk):
            k = min(chunk, rows - a)
            items = np.minimum(g.zipf(1.3, k), n_items) - 1
            users = np.minimum(g.zipf(1.6, k), n_users) - 1 + g.integers(0, n_users, k)
            users %= n_users
            item_s = pc.binary_join_element_wise("B", pc.utf8_lpad(pc.cast(pa.array(items), pa.string()), 9, "0"), "")
            user_s = pc.binary_join_element_wise("A", pc.utf8_lpad(pc.cast(pa.array(users), pa.string()), 12, "0"), "")
            rating = pa.array(g.integers(1, 6, k).astype(np.float32))
            ts = pa.array(g.integers(1_100_000_000, 1_540_000_000, k))
            w.write_table(pa.table([item_s, user_s, rating, ts], names=["item", "user", "rating", "timestamp"]))
    t1 = time.perf_counter()
    words = [f"w{i}" for i in range(5000)]
    with open(folder / "meta.json", "w", encoding="utf-8") as f:
        keep = g.random(n_items) < 0.95
        wi = g.integers(0, len(words), (n_items, 4))
        for i in np.flatnonzero(keep):
            title = " ".join(words[j] for j in wi[i])
            f.write(json.dumps({"asin": f"B{i:09d}", "title": title, "brand": f"brand{i % 997}",
                                "category": ["Cat", f"Sub{i % 31}"]}) + "\n")
    return {"rows": rows, "items": n_items, "users": n_users, "write_ratings_s": t1 - t0,
            "write_meta_s": time.perf_counter() - t1,
            "ratings_mib": (folder / "ratings.csv").stat().st_size / 2**20,
            "meta_mib": (folder / "meta.json").stat().st_size / 2**20}


def child_read(a) -> None:
    """The read floor: stream the ratings CSV through pyarrow (the reader the ETL uses, no work)."""
    from pipeline.seqrec import formats as fm

    t0 = time.perf_counter()
    n = sum(b.num_rows for b in fm.read_ratings(Path(a.dump) / "ratings.csv", a.batch_rows))
    emit({"rows": n, "seconds": time.perf_counter() - t0})


def child_etl(a) -> None:
    from pipeline.seqrec.etl import build_pretrain_sets

    dump = Path(a.dump)
    work = Path(tempfile.mkdtemp(prefix="amazon_etl_", dir=OUT))
    try:
        t0 = time.perf_counter()
        report, _ = build_pretrain_sets([dump / "ratings.csv"], [dump / "meta.json"], set(), work / "out", work / "work",
                                        scales=[int(s) for s in a.scales.split(",")], min_inter=a.min_inter,
                                        buckets=a.buckets, batch_rows=a.batch_rows, seed=a.seed)
        emit({"seconds": time.perf_counter() - t0, "report": report})
    finally:
        shutil.rmtree(work, ignore_errors=True)


def main() -> None:
    import yaml

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--child", choices=("read", "etl"))
    ap.add_argument("--rows", type=int, default=10_000_000)
    ap.add_argument("--buckets", type=int, default=64)
    ap.add_argument("--scales", default="", help="comma-separated interactions per scaled set (default 1%%, 10%%)")
    ap.add_argument("--seed", type=int, default=2024)
    ap.add_argument("--dump", help=argparse.SUPPRESS)
    ap.add_argument("--batch-rows", type=int, default=None)
    ap.add_argument("--min-inter", type=int, default=None)
    a = ap.parse_args()
    amazon = yaml.safe_load((ROOT / "params.yaml").read_text())["amazon"]
    a.batch_rows = a.batch_rows or amazon["batch_rows"]
    a.min_inter = a.min_inter or amazon["min_user_interactions"]
    a.scales = a.scales or f"{a.rows // 100},{a.rows // 10}"
    if a.child == "read":
        return child_read(a)
    if a.child == "etl":
        return child_etl(a)

    dump = OUT / "amazon_etl" / f"rows{a.rows}_seed{a.seed}"
    if not (dump / "done.json").is_file():
        shutil.rmtree(dump, ignore_errors=True)
        print(f"writing a synthetic v2 dump of {a.rows:,} ratings (cached) ...", flush=True)
        info = write_dump(dump, a.rows, a.seed)
        (dump / "done.json").write_text(json.dumps(info))
    info = json.loads((dump / "done.json").read_text())
    common = ["--dump", str(dump), "--rows", str(a.rows), "--batch-rows", str(a.batch_rows),
              "--min-inter", str(a.min_inter), "--seed", str(a.seed)]
    read = run_child(__file__, "--child", "read", *common)
    etl = run_child(__file__, "--child", "etl", *common, "--buckets", str(a.buckets), "--scales", a.scales)
    rss = etl.get("vmhwm_mib", etl["ru_maxrss_mib"])
    rate = a.rows / etl["seconds"]
    projected_min = REAL_ROWS / rate / 60
    pool = etl["report"]["pool"]
    lines = [f"# Amazon ETL: {a.rows:,}-row synthetic v2 dump ({info['ratings_mib']:,.0f} MiB ratings CSV, "
             f"{info['items']:,} items, {info['meta_mib']:,.0f} MiB metadata), {a.buckets} buckets, scales {a.scales}",
             "", "| | seconds | rows/s | peak RSS MiB | vs read |", "|---|---|---|---|---|",
             f"| pyarrow read of the ratings CSV (floor) | {fmt_s(read['seconds'])} | {a.rows / read['seconds']:,.0f} | "
             f"{read.get('vmhwm_mib', read['ru_maxrss_mib']):,.0f} | 1.0x |",
             f"| ETL to the scaled sets (build_pretrain_sets) | {fmt_s(etl['seconds'])} | {rate:,.0f} | {rss:,.0f} | "
             f"{etl['seconds'] / read['seconds']:.1f}x |", "",
             f"- pool after filtering: {pool.get('users', 0):,} users, {pool.get('interactions', 0):,} interactions, "
             f"{pool.get('items', 0):,} items",
             f"- projected to the real {REAL_ROWS / 1e6:.1f}M ratings at this rate: **{projected_min:,.0f} min** on "
             f"these 2 cores (target <= 30 min; the seed's ETL: {SEED_ETL_HOURS:.0f} h on 8 cores)",
             f"- peak RSS {rss:,.0f} MiB with {a.buckets} buckets (one bucket of the pool in memory at a time: "
             f"~{a.rows / a.buckets:,.0f} rows here; with 256 buckets the real pool's bucket is ~"
             f"{REAL_ROWS / 256:,.0f} rows)"]
    text = "\n".join(lines) + "\n"
    print(text)
    (OUT / "amazon_etl.md").write_text(text)
    (OUT / "amazon_etl.json").write_text(json.dumps({"dump": info, "read": read, "etl": etl}, indent=2) + "\n")


if __name__ == "__main__":
    main()
