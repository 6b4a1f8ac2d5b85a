"""Benchmark: FAISS flat vs HNSW vs IVF-PQ (pipeline.tenrec.ann) on clustered unit vectors.

For each size (``--sizes``, default 100k and 1M) a seeded Gaussian-mixture of ``--clusters`` centres in
``--dim`` dimensions, L2-normalised (inner product = cosine, as the two-tower vectors); queries drawn from
the same mixture. Exact top-100 by the flat index is the reference. Reported per index: build seconds,
queries/s (``--threads`` OpenMP threads), recall@100 against exact, peak RSS (each size in its own process).
Target (issue 5): HNSW recall@100 >= 0.95 at >= 5x flat's QPS at 1M.

    python bench/faiss_index.py                         # 100k and 1M (1M: HNSW build takes minutes on 2 cores)
    python bench/faiss_index.py --sizes 100000          # quick

Writes bench/out/faiss_index.md. Not collected by pytest.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import OUT, emit, run_child  # noqa: E402


def vectors(n: int, dim: int, clusters: int, seed: int):
    """n points of the mixture (the centres are fixed; ``seed`` draws the points)."""
    import numpy as np

    centres = np.random.default_rng(12345).normal(size=(clusters, dim)).astype(np.float32)
    g = np.random.default_rng(seed)
    x = centres[g.integers(0, clusters, n)] + 0.35 * g.normal(size=(n, dim)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def child(n: int, a) -> None:
    import faiss

    from pipeline.tenrec import ann

    faiss.omp_set_num_threads(a.threads)
    x = vectors(n, a.dim, a.clusters, 0)
    q = vectors(a.queries, a.dim, a.clusters, 1)                      # same mixture, other draws
    configs = [("flat", {}),
               (f"hnsw M={a.hnsw_m} efC={a.ef_construction} efS={a.ef_search}",
                {"kind": "hnsw", "hnsw_m": a.hnsw_m, "ef_construction": a.ef_construction, "ef_search": a.ef_search}),
               (f"ivfpq nlist={a.nlist} nprobe={a.nprobe} m={a.pq_m}x8",
                {"kind": "ivfpq", "nlist": a.nlist, "nprobe": a.nprobe, "pq_m": a.pq_m, "pq_nbits": 8})]
    rows, exact = [], None
    for name, kw in configs:
        kind = kw.pop("kind", "flat")
        t0 = time.perf_counter()
        index = ann.build_index(x, kind, **kw)
        build = time.perf_counter() - t0
        ids, qps = ann.search(index, q, a.k, batch=256)
        if exact is None:
            exact = ids
        rows.append({"index": name, "build_s": build, "qps": qps, "recall": ann.overlap_recall(ids, exact)})
        del index
    emit({"n": n, "rows": rows})


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[100_000, 1_000_000])
    ap.add_argument("--dim", type=int, default=64)
    ap.add_argument("--clusters", type=int, default=1000)
    ap.add_argument("--queries", type=int, default=2000)
    ap.add_argument("--k", type=int, default=100)
    ap.add_argument("--hnsw-m", type=int, default=32)
    ap.add_argument("--ef-construction", type=int, default=100)
    ap.add_argument("--ef-search", type=int, default=256)
    ap.add_argument("--nlist", type=int, default=1024)
    ap.add_argument("--nprobe", type=int, default=32)
    ap.add_argument("--pq-m", type=int, default=16)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--child", type=int)
    a = ap.parse_args()
    if a.child:
        child(a.child, a)
        return
    flags = ["--dim", str(a.dim), "--clusters", str(a.clusters), "--queries", str(a.queries), "--k", str(a.k),
             "--hnsw-m", str(a.hnsw_m), "--ef-construction", str(a.ef_construction), "--ef-search", str(a.ef_search),
             "--nlist", str(a.nlist), "--nprobe", str(a.nprobe), "--pq-m", str(a.pq_m), "--threads", str(a.threads)]
    lines = [f"# FAISS flat vs HNSW vs IVF-PQ ({a.dim}-d clustered unit vectors, {a.queries} queries, "
             f"recall@{a.k} vs exact, {a.threads} threads, CPU)", "",
             "| vectors | index | build s | queries/s | x flat QPS | recall@100 | peak RSS MiB |", "|---|---|---|---|---|---|---|"]
    allres = []
    for n in a.sizes:
        r = run_child(__file__, "--child", str(n), *flags)
        allres.append(r)
        flat_qps = r["rows"][0]["qps"]
        for row in r["rows"]:
            lines.append(f"| {n:,} | {row['index']} | {row['build_s']:.1f} | {row['qps']:,.0f} | "
                         f"{row['qps'] / flat_qps:.1f}x | {row['recall']:.4f} | {r['ru_maxrss_mib']:.0f} |")
        print("\n".join(lines[-3:]), flush=True)
        h = r["rows"][1]
        if n >= 1_000_000:
            ok = h["recall"] >= 0.95 and h["qps"] >= 5 * flat_qps
            lines.append(f"| | target at {n:,}: HNSW recall >= 0.95 at >= 5x flat QPS | | | | "
                         f"{'met' if ok else 'NOT met'} | |")
        OUT.mkdir(parents=True, exist_ok=True)                      # written after every size: a long 1M
        (OUT / "faiss_index.md").write_text("\n".join(lines) + "\n")  # run that is stopped keeps the rest
        (OUT / "faiss_index.json").write_text(json.dumps(allres, indent=1))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
