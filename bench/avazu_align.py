"""Benchmark: the Avazu alignment stage (x1 / x2 ids -> x4 tokens) against normalizing the same sources.

What it measures
----------------
For each world size N (``--rows``, default 4M; N = the world's events: x1, x2 and x4 are re-splits of the
same N rows, so every source has N rows over its splits) a synthetic Avazu world is generated with
``pipeline.ctr.synthetic`` (``generate_world`` + ``write_layouts`` for x1, x2, x4, as the download stage
does, with params.yaml's ``avazu.synthetic`` mean_ctr / rank / temperature). Generating it is not timed
and is cached under ``bench/out/data/`` (delete it to regenerate). Then, each in its own fresh subprocess
so that the peak RSS (``ru_maxrss`` of that child) belongs to it alone, wall-clock of the work only
(imports excluded):

* ``normalize``    -- the baseline, measured in the same run: ``normalize_source`` of x1, x2 and x4 from
  the raw CSVs to the normalized parquet, one source after the other, as stage ``avazu_normalize@<source>``
  does it (layouts from ``conf/avazu_layouts.yaml``, the oracle sidecar read where the world has one).
  Timed per source and in total; one child, so its peak RSS is the largest of the three.
* ``align x1`` / ``align x2`` -- what stage ``avazu_align`` does per source: ``align_source`` (source vs
  x4, every split, the layout's ``rare_token`` / ``oov_min_count``), then ``apply_alignment`` for every
  split of the source. One child per source (the stage runs both in one process, see below). Its peak RSS
  is read before the scoring; then ``Alignment.report`` against the world's truth sidecar
  (``<source>/alignment_truth.parquet``, ``ALIGNMENT_TRUTH``) gives ``accuracy_vs_truth`` (share of the
  source's occurrences whose id got its true token or the declared rare bucket) and the wrong ids.
* ``empty child``  -- a child that only imports what the align child imports: the RSS every child pays
  whatever N (interpreter, numpy, pyarrow, the library).

``batch_rows`` is params.yaml's ``avazu.batch_rows`` (262144) unless ``--batch-rows``; it is also the row
group size of the normalized files, which ``apply_alignment`` streams.

The report: a table of step, rows, seconds, ratio to the total normalize time of the same N, peak RSS
(MB = 10^6 bytes) per N; the alignment's accuracy against the truth; and the projection to the real
files (40,428,967 rows per source, Kaggle's labelled ``train.csv``): time linearly from the largest N;
peak RSS linearly in rows above the empty child's RSS from the largest N alone and, when ``--rows`` has
two or more values, from the slope between the smallest and the largest N (the more honest of the two: it
does not assume all of the measured RSS above the empty child grows with rows). Target: peak RSS of
either alignment <= 2 GB projected to 40.4 M rows; the report says whether the measurement meets it.
Printed and saved to ``bench/out/avazu_align.md``.

Stage ``avazu_align`` aligns x1 then x2 in one process and releases the x1 ``Alignment`` (its per-row
source codes, ~35 B a row) before x2's ``align_source`` runs, so the stage's own peak is the larger of the
two per-source peaks measured below (each alignment alone, in its own child).

How to run (from the repository root, in its virtualenv)::

    python bench/avazu_align.py                          # N = 4M (generation is slow the first time)
    python bench/avazu_align.py --rows 1000000 4000000   # two sizes: RSS projected from the slope
    python bench/avazu_align.py --rows 100000 200000     # quick smoke run
    python bench/avazu_align.py --keep-data              # keep the normalized / aligned parquet files

This is a benchmark, not a test: pytest does not collect it.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
from pathlib import Path
from time import perf_counter

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))   # run as a script: `pipeline`, `bench` importable

from bench import common  # noqa: E402
from bench.avazu_etl import LAYOUTS, REAL_X4_ROWS, warm_cache  # noqa: E402
from bench.common import OUT, ROOT, emit, fmt_s  # noqa: E402

SOURCES = ("x1", "x2", "x4")
ALIGNED = ("x1", "x2")
TARGET_GB = 2.0                   # peak RSS of one alignment, projected to REAL_X4_ROWS
MB = 10 ** 6


def _params() -> dict:
    import yaml

    return yaml.safe_load((ROOT / "params.yaml").read_text(encoding="utf-8"))


# ------------------------------------------------------------------------------------------------------
# child side: one measured thing per fresh process


def child_generate(rows: int, seed: int, data: Path) -> dict:
    from pipeline.ctr.schema import load_layouts
    from pipeline.ctr.synthetic import generate_world, write_layouts

    layouts = load_layouts(LAYOUTS)
    syn = _params()["avazu"]["synthetic"]
    t0 = perf_counter()
    world = generate_world(rows, seed, mean_ctr=syn["mean_ctr"], rank=syn["rank"],
                           temperature=syn["temperature"], fields=layouts.fields)
    summary = write_layouts(world, data, layouts, list(SOURCES), seed)
    csv_bytes = {s: sum(p.stat().st_size for p in (data / s).glob("*.csv")) for s in SOURCES}
    return {"rows": rows, "splits": summary, "csv_bytes": csv_bytes, "gen_seconds": perf_counter() - t0}


def child_baseline() -> dict:
    import pyarrow.parquet  # noqa: F401

    from pipeline.ctr import align  # noqa: F401
    from pipeline.ctr.schema import load_layouts  # noqa: F401
    from pipeline.ctr.synthetic import ALIGNMENT_TRUTH  # noqa: F401

    return {}


def child_normalize(data: Path, work: Path, batch_rows: int) -> dict:
    from pipeline.ctr.normalize import normalize_source
    from pipeline.ctr.schema import load_layouts

    layouts = load_layouts(LAYOUTS)
    per_source = {}
    for s in SOURCES:
        dst = work / "normalized" / s
        dst.mkdir(parents=True)
        t0 = perf_counter()
        stats = normalize_source(data / s, layouts[s], layouts.fields, dst, batch_rows)
        per_source[s] = {"seconds": perf_counter() - t0,
                         "rows": sum(st["rows"] for st in stats.values()),
                         "after_mib": common.peak_rss_mib()["ru_maxrss_mib"]}
    return {"sources": per_source, "seconds": sum(r["seconds"] for r in per_source.values())}


def child_align(source: str, data: Path, work: Path, batch_rows: int) -> dict:
    import pyarrow.parquet as pq

    from pipeline.ctr import align as al
    from pipeline.ctr.schema import load_layouts
    from pipeline.ctr.synthetic import ALIGNMENT_TRUTH

    layouts = load_layouts(LAYOUTS)
    lay = layouts[source]
    files = {s: {sp: work / "normalized" / s / f"{sp}.parquet" for sp in layouts[s].splits}
             for s in (source, "x4")}
    out = work / "aligned" / source
    out.mkdir(parents=True)
    t0 = perf_counter()
    alignment = al.align_source(files[source], files["x4"], list(layouts.fields), rare_token=lay.rare_token,
                                rare_min_count=lay.oov_min_count, batch_rows=batch_rows)
    t1 = perf_counter()
    written = {sp: al.apply_alignment(alignment, path, out / f"{sp}.parquet", split=sp, batch_rows=batch_rows)
               for sp, path in files[source].items()}
    t2 = perf_counter()
    work_rss = common.peak_rss_mib()                  # the alignment's peak, before the scoring below
    rep = alignment.report(pq.read_table(data / source / ALIGNMENT_TRUTH))
    t3 = perf_counter()
    tot = rep["total"]
    rows = rep["rows"]
    matched = sum(sp["rows_matched"] for sp in rep["splits"].values())
    return {"seconds": t2 - t0, "rows": rows,
            "steps": {"align_source": t1 - t0, "apply_alignment": t2 - t1},
            "report_seconds": t3 - t2, "work_rss_mib": work_rss["ru_maxrss_mib"],
            "rounds": [r["new"] for r in rep["rounds"]],
            "accuracy_vs_truth": rep["accuracy_vs_truth"], "wrong": tot["wrong"],
            "wrong_share": tot["wrong_share"], "truth_missing": tot["truth_missing"],
            "ids": tot["ids"], "mapped": tot["mapped"], "ambiguous": tot["ambiguous"], "rare": tot["rare"],
            "share_mapped": tot["share_mapped"], "share_rare": tot["share_rare"],
            "share_ambiguous": tot["share_ambiguous"], "rows_matched": matched,
            "written_rows": sum(w["rows"] for w in written.values()),
            "worst_fields": sorted(((f, r["accuracy_vs_truth"], r["wrong"]) for f, r in rep["fields"].items()),
                                   key=lambda t: t[1])[:3]}


def child_main(args) -> None:
    data, work = Path(args.data) if args.data else None, Path(args.work) if args.work else None
    if args.child == "generate":
        res = child_generate(args.rows[0], args.seed, data)
    elif args.child == "baseline":
        res = child_baseline()
    elif args.child == "normalize":
        res = child_normalize(data, work, args.batch_rows)
    else:
        res = child_align(args.child.split("_", 1)[1], data, work, args.batch_rows)
    emit(res)


# ------------------------------------------------------------------------------------------------------
# parent side


def child(kind: str, *argv: str) -> dict:
    return common.run_child(__file__, "--child", kind, *argv)


def world(out: Path, rows: int, seed: int) -> tuple[Path, dict]:
    """The cached world of ``rows`` events under ``out/data/`` (generated in a child on first use)."""
    data = out / "data" / f"align_rows{rows}_seed{seed}"
    meta_path = data / "meta.json"
    have = meta_path.is_file() and all((data / s / "train.csv").is_file() for s in SOURCES) and \
        all((data / s / "alignment_truth.parquet").is_file() for s in ALIGNED)
    if have:
        return data, dict(json.loads(meta_path.read_text()), cached=True)
    shutil.rmtree(data, ignore_errors=True)
    data.mkdir(parents=True)
    print(f"  generating a world of {rows:,} events, x1 + x2 + x4 (not timed) ...", flush=True)
    meta = child("generate", "--rows", str(rows), "--seed", str(seed), "--data", str(data))
    meta_path.write_text(json.dumps(meta, indent=1))
    return data, dict(meta, cached=False)


def mb(mib: float) -> float:
    return mib * 2 ** 20 / MB


def project_rss(res: dict, rows_list: list[int], key: str, base_mib: float) -> tuple[float, float | None]:
    """Peak RSS in GB at REAL_X4_ROWS: (linear above the empty child from the largest N, from the slope
    between the smallest and the largest N or None with one N)."""
    lo, hi = min(rows_list), max(rows_list)
    r_hi = mb(res[hi][key])
    one = mb(base_mib) + (r_hi - mb(base_mib)) * REAL_X4_ROWS / hi
    if lo == hi:
        return one / 1e3, None
    slope = (r_hi - mb(res[lo][key])) / (hi - lo)          # MB per row
    return one / 1e3, (r_hi + slope * (REAL_X4_ROWS - hi)) / 1e3


def build_report(norm: dict, aligned: dict, base: dict, meta: dict, rows_list: list[int],
                 batch_rows: int) -> str:
    lo, hi = min(rows_list), max(rows_list)
    base_mib = base["ru_maxrss_mib"]
    L = ["# Avazu alignment benchmark: align x1 / x2 to x4 vs normalize", ""]
    L.append(f"World: synthetic (`pipeline.ctr.synthetic`), N events re-split as x1 (train/valid/test), x2 "
             f"(train/test), x4 (train/valid/test); batch_rows={batch_rows:,}; {os.cpu_count()} CPU cores; "
             "one run per step, wall clock, imports excluded; peak RSS = ru_maxrss of a fresh subprocess "
             "per step (MB = 10^6 bytes); the align steps' RSS is read before the truth scoring.")
    L.append("")
    for n in rows_list:
        cb = meta[n]["csv_bytes"]
        L.append(f"- N={n:,}: raw CSV " + ", ".join(f"{s} {cb[s] / MB:,.0f} MB" for s in SOURCES))
    L.append("")
    L.append("| N | step | rows | seconds | vs normalize | peak RSS MB | sub-steps (s) |")
    L.append("|---:|---|---:|---:|---:|---:|---|")
    for n in rows_list:
        t_norm = norm[n]["seconds"]
        for s in SOURCES:
            r = norm[n]["sources"][s]
            L.append(f"| {n:,} | normalize {s} | {r['rows']:,} | {fmt_s(r['seconds'])} | "
                     f"{r['seconds'] / t_norm:.2f}x | | |")
        L.append(f"| {n:,} | **normalize total** | {sum(r['rows'] for r in norm[n]['sources'].values()):,} | "
                 f"{fmt_s(t_norm)} | 1.00x | {mb(norm[n]['ru_maxrss_mib']):,.0f} | |")
        for s in ALIGNED:
            r = aligned[(n, s)]
            steps = ", ".join(f"{k} {fmt_s(v)}" for k, v in r["steps"].items())
            L.append(f"| {n:,} | align {s} -> x4 | {r['rows']:,} | {fmt_s(r['seconds'])} | "
                     f"{r['seconds'] / t_norm:.2f}x | {mb(r['work_rss_mib']):,.0f} | {steps} |")
    L.append(f"| | empty child (imports only) | | | | {mb(base_mib):,.0f} | |")
    L.append("")
    L.append("Alignment vs the synthetic world's truth (accuracy = share of the source's occurrences whose "
             "id got its true x4 token, or the rare bucket for x2's merged id; wrong = ids given a wrong "
             "token):")
    L.append("")
    L.append("| N | source | ids | mapped | ambiguous | rare | occ. mapped | accuracy vs truth | wrong ids "
             "(occ. share) | rows matched | rounds (new ids) | lowest fields |")
    L.append("|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---|---|")
    for n in rows_list:
        for s in ALIGNED:
            r = aligned[(n, s)]
            worst = ", ".join(f"{f} {a:.2%}" for f, a, _ in r["worst_fields"])
            L.append(f"| {n:,} | {s} | {r['ids']:,} | {r['mapped']:,} | {r['ambiguous']:,} | {r['rare']:,} | "
                     f"{r['share_mapped']:.3%} | {r['accuracy_vs_truth']:.3%} | {r['wrong']:,} "
                     f"({r['wrong_share']:.3%}) | {r['rows_matched'] / r['rows']:.2%} | "
                     f"{'/'.join(map(str, r['rounds']))} | {worst} |")
    problems = [f"{s}@{n:,}: {aligned[(n, s)]['truth_missing']:,} ids not in the truth sidecar"
                for n in rows_list for s in ALIGNED if aligned[(n, s)]["truth_missing"]]
    problems += [f"{s}@{n:,}: wrote {aligned[(n, s)]['written_rows']:,} rows of {aligned[(n, s)]['rows']:,}"
                 for n in rows_list for s in ALIGNED if aligned[(n, s)]["written_rows"] != aligned[(n, s)]["rows"]]
    if problems:
        L += ["", "CHECK: " + "; ".join(problems)]
    L.append("")
    scale = REAL_X4_ROWS / hi
    two = lo != hi
    L.append(f"Projected to the real files ({REAL_X4_ROWS:,} rows per source): time linear from N={hi:,}; "
             f"peak RSS linear in rows above the empty child ({mb(base_mib):,.0f} MB) from N={hi:,} alone"
             + (f", and from the slope between N={lo:,} and N={hi:,}" if two else
                " (give `--rows` two sizes for a projection from the slope)") + ".")
    L.append("")
    L.append("| step | projected seconds | projected minutes | vs normalize | RSS per extra row (B) | "
             "peak RSS GB, 1 point | " + ("peak RSS GB, slope | " if two else "") + f"<= {TARGET_GB:g} GB |")
    L.append("|---|---:|---:|---:|---:|---:|" + ("---:|" if two else "") + "---|")
    verdicts = {}
    steps = [("normalize total", norm, "ru_maxrss_mib", None)] + \
        [(f"align {s} -> x4", {n: aligned[(n, s)] for n in rows_list}, "work_rss_mib", s) for s in ALIGNED]
    for name, res, key, s in steps:
        sec = res[hi]["seconds"] * scale
        one, slope = project_rss(res, rows_list, key, base_mib)
        per_row = ((mb(res[hi][key]) - mb(res[lo][key])) / (hi - lo) if two
                   else (mb(res[hi][key]) - mb(base_mib)) / hi) * MB
        used = slope if slope is not None else one
        if s:
            verdicts[s] = (used, used <= TARGET_GB)
        L.append(f"| {name} | {sec:,.0f} | {sec / 60:,.1f} | {res[hi]['seconds'] / norm[hi]['seconds']:.2f}x | "
                 f"{per_row:,.0f} | {one:,.2f} | " + (f"{slope:,.2f} | " if two else "")
                 + (("yes" if verdicts[s][1] else "NO") if s else "(not a target)") + " |")
    L.append("")
    L.append(f"normalize streams in batch_rows blocks: its RSS should stop growing once every split has more "
             f"than batch_rows ({batch_rows:,}) rows, so its linear RSS projections are upper bounds, shown for "
             "scale only.")
    L.append("")
    how = "slope" if two else "1-point"
    met = all(ok for _, ok in verdicts.values())
    L.append(f"Target: peak RSS of each alignment <= {TARGET_GB:g} GB at {REAL_X4_ROWS:,} rows ({how} "
             "projection): " + ", ".join(f"{s} {v:,.2f} GB" for s, (v, _) in verdicts.items())
             + f" -> {'MET' if met else 'NOT MET'}.")
    if hi < 1_000_000:
        L.append(f"(N={hi:,} is a smoke size: fixed costs dominate, the projections above are not reliable.)")
    return "\n".join(L) + "\n"


def main() -> None:
    batch_default = int(_params()["avazu"]["batch_rows"])
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rows", type=int, nargs="+", default=[4_000_000],
                    help="world events N, one or more sizes (default: 4000000)")
    ap.add_argument("--batch-rows", type=int, default=batch_default,
                    help=f"rows per streamed batch (default: params.yaml avazu.batch_rows = {batch_default})")
    ap.add_argument("--seed", type=int, default=2024)
    ap.add_argument("--out", type=Path, default=OUT, help="output folder (default: bench/out)")
    ap.add_argument("--keep-data", action="store_true",
                    help="keep the normalized and aligned parquet files under <out>/work/ (the generated "
                         "world under <out>/data/ is always kept as the cache)")
    ap.add_argument("--child", choices=["generate", "baseline", "normalize", *(f"align_{s}" for s in ALIGNED)],
                    help=argparse.SUPPRESS)
    ap.add_argument("--data", help=argparse.SUPPRESS)
    ap.add_argument("--work", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        child_main(args)
        return
    if min(args.rows) < 1 or args.batch_rows < 1:
        ap.error("--rows and --batch-rows must be positive")

    out = args.out.resolve()
    rows_list = sorted(set(args.rows))
    out.mkdir(parents=True, exist_ok=True)
    br = str(args.batch_rows)
    base = child("baseline")
    print(f"empty child: peak RSS {mb(base['ru_maxrss_mib']):,.0f} MB", flush=True)
    norm, aligned, meta = {}, {}, {}
    for n in rows_list:
        print(f"N={n:,}", flush=True)
        data, meta[n] = world(out, n, args.seed)
        print("  world " + ("cached" if meta[n]["cached"] else f"generated in {meta[n]['gen_seconds']:.0f}s")
              + f" under {data}", flush=True)
        for s in SOURCES:
            for csv in sorted((data / s).glob("*.csv")):
                warm_cache(csv)
        work = out / "work" / f"align_rows{n}"
        shutil.rmtree(work, ignore_errors=True)
        norm[n] = child("normalize", "--data", str(data), "--work", str(work), "--batch-rows", br)
        per = "  ".join(f"{s}={r['seconds']:.2f}s" for s, r in norm[n]["sources"].items())
        print(f"  normalize      {norm[n]['seconds']:8.2f}s  peak RSS {mb(norm[n]['ru_maxrss_mib']):8,.0f} MB  "
              f"{per}", flush=True)
        for s in ALIGNED:
            r = aligned[(n, s)] = child(f"align_{s}", "--data", str(data), "--work", str(work), "--batch-rows", br)
            print(f"  align {s} -> x4 {r['seconds']:8.2f}s  peak RSS {mb(r['work_rss_mib']):8,.0f} MB  "
                  f"accuracy {r['accuracy_vs_truth']:.3%}  wrong ids {r['wrong']:,}", flush=True)
        if not args.keep_data:
            shutil.rmtree(work, ignore_errors=True)
    text = build_report(norm, aligned, base, meta, rows_list, args.batch_rows)
    dst = out / "avazu_align.md"
    dst.write_text(text, encoding="utf-8")
    print()
    print(text, end="")
    print(f"(saved to {dst})")


if __name__ == "__main__":
    main()
