"""Benchmark: the Fastformer encoder (pipeline.tenrec.fastformer) against ``nn.TransformerEncoder`` of the
same width and depth, for sequence lengths 64 ... 2048.

Each (encoder, length) runs in its own fresh process (so its peak RSS is its own): ``--warmup`` untimed
then ``--steps`` timed training steps (forward + backward on a random batch with a padding mask; the median
step is reported) and a no-grad forward. Targets (issue 5): Fastformer >= 4x faster than the Transformer
at L = 1024, and Fastformer's time(1024) / time(128) <= 10 (linear, not quadratic, in L).

    python bench/fastformer.py                                   # d=128, 4 heads, 2 layers, batch 8, 1 thread
    python bench/fastformer.py --lengths 64 128 256 --steps 3    # quick

Writes bench/out/fastformer.md. Not collected by pytest.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import OUT, emit, run_child  # noqa: E402


def child(kind: str, length: int, a) -> None:
    import torch
    from torch import nn

    from pipeline.tenrec.fastformer import Encoder

    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    if kind == "fastformer":
        enc = Encoder("fastformer", a.dim, a.heads, 4 * a.dim, a.layers, 0.1)
        run = lambda x, m: enc(x, m)                                    # noqa: E731
    else:
        layer = nn.TransformerEncoderLayer(a.dim, a.heads, 4 * a.dim, 0.1, activation="gelu", batch_first=True)
        enc = nn.TransformerEncoder(layer, a.layers, enable_nested_tensor=False)
        run = lambda x, m: enc(x, src_key_padding_mask=~m)              # noqa: E731
    x = torch.randn(a.batch, length, a.dim)
    mask = torch.ones(a.batch, length, dtype=torch.bool)
    mask[: a.batch // 2, int(length * 0.8):] = False                    # half the batch 20% padded
    times, cpu = [], []
    for i in range(a.warmup + a.steps):
        t0, c0 = time.perf_counter(), time.process_time()
        out = run(x, mask)
        out.square().mean().backward()
        enc.zero_grad(set_to_none=True)
        if i >= a.warmup:
            times.append(time.perf_counter() - t0)
            cpu.append(time.process_time() - c0)
    enc.eval()
    with torch.no_grad():
        t0 = time.perf_counter()
        run(x, mask)
        fwd = time.perf_counter() - t0
    emit({"kind": kind, "length": length, "train_step_s": statistics.median(times),
          "train_cpu_s": statistics.median(cpu), "forward_s": fwd,
          "params": sum(p.numel() for p in enc.parameters())})


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--lengths", type=int, nargs="+", default=[64, 128, 256, 512, 1024, 2048])
    ap.add_argument("--dim", type=int, default=128)
    ap.add_argument("--heads", type=int, default=4)
    ap.add_argument("--layers", type=int, default=2)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--child", nargs=2, metavar=("KIND", "LENGTH"))
    a = ap.parse_args()
    if a.child:
        child(a.child[0], int(a.child[1]), a)
        return
    common = ["--dim", str(a.dim), "--heads", str(a.heads), "--layers", str(a.layers), "--batch", str(a.batch),
              "--steps", str(a.steps), "--warmup", str(a.warmup), "--threads", str(a.threads)]
    res = {}
    for length in a.lengths:
        for kind in ("fastformer", "transformer"):
            r = run_child(__file__, "--child", kind, str(length), *common)
            res[(kind, length)] = r
            print(f"{kind:12s} L={length:5d} step {r['train_step_s'] * 1e3:9.1f} ms (cpu {r['train_cpu_s'] * 1e3:9.1f}) fwd {r['forward_s'] * 1e3:8.1f} ms"
                  f"  peak RSS {r['ru_maxrss_mib']:7.0f} MiB", flush=True)
    lines = [f"# Fastformer vs nn.TransformerEncoder (d={a.dim}, {a.heads} heads, {a.layers} layers, batch {a.batch}, "
             f"{a.threads} threads, CPU)", "",
             "Training step = forward + backward, median of the timed steps (wall and process CPU time); peak RSS "
             "of the process. On a shared machine compare the CPU-time columns (time-slicing inflates wall time); "
             "the targets are computed on CPU time.", "",
             "| L | Fastformer step ms (wall / CPU) | Transformer step ms (wall / CPU) | speed-up (CPU) "
             "| Fastformer fwd ms | Transformer fwd ms | Fastformer peak MiB | Transformer peak MiB |",
             "|---|---|---|---|---|---|---|---|"]
    for length in a.lengths:
        f, t = res[("fastformer", length)], res[("transformer", length)]
        lines.append(f"| {length} | {f['train_step_s'] * 1e3:.1f} / {f['train_cpu_s'] * 1e3:.1f} | "
                     f"{t['train_step_s'] * 1e3:.1f} / {t['train_cpu_s'] * 1e3:.1f} | "
                     f"{t['train_cpu_s'] / f['train_cpu_s']:.2f}x | {f['forward_s'] * 1e3:.1f} | "
                     f"{t['forward_s'] * 1e3:.1f} | {f['ru_maxrss_mib']:.0f} | {t['ru_maxrss_mib']:.0f} |")
    if 1024 in a.lengths and 128 in a.lengths:
        f1024, f128 = res[("fastformer", 1024)]["train_cpu_s"], res[("fastformer", 128)]["train_cpu_s"]
        sp = res[("transformer", 1024)]["train_cpu_s"] / f1024
        lines += ["", f"- speed-up at L=1024: **{sp:.2f}x** (target >= 4x: {'met' if sp >= 4 else 'NOT met'})",
                  f"- Fastformer time(1024)/time(128): **{f1024 / f128:.2f}** (target <= 10: "
                  f"{'met' if f1024 / f128 <= 10 else 'NOT met'})"]
    text = "\n".join(lines) + "\n"
    print(text)
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "fastformer.md").write_text(text)
    (OUT / "fastformer.json").write_text(json.dumps([{**v} for v in res.values()], indent=1))


if __name__ == "__main__":
    main()
