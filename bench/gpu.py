"""GPU benchmark, one script for every branch: the training step of each branch's model at realistic shapes.

For each workload it times ``warmup + steps`` full training steps (forward, backward, the step rule the
pipeline uses) on the device and prints samples/s, the FLOPs of one step (counted by
``torch.utils.flop_counter.FlopCounterMode``: matmuls, convolutions and attention, forward and backward;
embedding gathers and optimizer arithmetic count 0), the achieved TFLOP/s and its share of the device's
dense peak for the dtype used. Workloads (``--shapes real``, the default on CUDA):

* ``deepfm``   -- the CTR baseline (pipeline.ctr.models, DeepFM with the default ``ctr.deepfm.encoder``) on
  Avazu-sized vocabularies: 24 fields, ``--deepfm-rows`` embedding rows in total (default 4M, the order of
  Avazu x4's vocabulary at min_count 2), dim 16, MLP [400, 400, 400], FuxiCTR's batch 10,000, fp32, the
  fused PlainAdam of pipeline.core.optim. Goal on an H200: >= 1M samples/s.
* ``llm_ctr``  -- LLM-CTR phase 1 (pipeline.ctr.llm: frozen baseline -> projector -> 24 soft tokens after
  the prompt -> frozen causal LM -> answer-token logits) with a randomly initialised model of Qwen3-0.6B's
  shapes in bf16 (no download), with and without the prompt KV cache. The projected phase-1 time over the
  two 20 % samples (``--phase1-rows``, 11.5M rows, one epoch) is rows / samples/s. Goal: <= 1.5 h.
* ``fastformer`` -- the Tenrec ranker (pipeline.tenrec.ranking.Ranker) at the seed's 12 layers x 512
  (8 heads, FFN 2048), history 50, 1M items, click + like heads, batch 512, fp32, Adam.
* ``sasrec``   -- the Amazon sequential recommender (pipeline.seqrec) at the seed's 8 layers x 256 (4 heads,
  FFN 1024), 50 positions, 1M items (id representation), sampled softmax with 1,000 shared negatives and
  log-q correction (pipeline.seqrec.train.SeqRecTask), batch 256, fp32, Adam.

``--shapes tiny`` (the default on CPU) shrinks every workload so the script runs in seconds on a laptop and
is exercised by the test suite (tests/test_bench_gpu.py); the numbers are then only a smoke test. Each
workload runs in its own child process (bench/common.py), so one that runs out of memory is reported and
the others still run. The whole script is sized to finish in <= 5 minutes on one H200.

``python bench/gpu.py [--device cuda] [--only deepfm,llm_ctr] [--steps 10]`` prints the table and writes
bench/out/gpu.md.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import OUT, emit, run_child  # noqa: E402

WORKLOADS = ("deepfm", "llm_ctr", "fastformer", "sasrec")

# Dense (no sparsity) peak TFLOP/s by device-name fragment, per compute dtype: vendor datasheets. fp32 is the
# non-tensor-core figure (the pipeline does not enable TF32).
PEAKS = (
    ("H200", {"bfloat16": 989.4, "float32": 66.9}),
    ("H100 PCIe", {"bfloat16": 756.0, "float32": 51.2}),
    ("H100", {"bfloat16": 989.4, "float32": 66.9}),
    ("A100", {"bfloat16": 312.0, "float32": 19.5}),
    ("L40S", {"bfloat16": 362.1, "float32": 91.6}),
    ("L4", {"bfloat16": 121.0, "float32": 30.3}),
)

SHAPES = {
    "real": {
        "deepfm": {"fields": 24, "rows": 4_000_000, "dim": 16, "hidden": [400, 400, 400], "batch": 10_000},
        "llm_ctr": {"fields": 24, "dim": 16, "batch": 256, "prompt_tokens": 48, "llm": "qwen3-0.6b"},
        "fastformer": {"items": 1_000_000, "dim": 512, "layers": 12, "heads": 8, "ffn": 2048, "max_len": 50,
                       "batch": 512},
        "sasrec": {"items": 1_000_000, "dim": 256, "layers": 8, "heads": 4, "ffn_mult": 4, "max_len": 50,
                   "negatives": 1000, "batch": 256},
    },
    "tiny": {
        "deepfm": {"fields": 24, "rows": 24_000, "dim": 8, "hidden": [64, 64], "batch": 512},
        "llm_ctr": {"fields": 24, "dim": 8, "batch": 8, "prompt_tokens": 16, "llm": "tiny"},
        "fastformer": {"items": 2000, "dim": 32, "layers": 2, "heads": 2, "ffn": 64, "max_len": 10, "batch": 64},
        "sasrec": {"items": 5000, "dim": 32, "layers": 2, "heads": 2, "ffn_mult": 2, "max_len": 20,
                   "negatives": 50, "batch": 64},
    },
}

TINY_QWEN = dict(vocab_size=512, hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                 num_key_value_heads=2, head_dim=16, max_position_embeddings=256, tie_word_embeddings=True)


def peak_tflops(name: str, dtype: str) -> float | None:
    for fragment, peaks in PEAKS:
        if fragment in name:
            return peaks.get(dtype)
    return None


# ------------------------------------------------------------------------------------------------ timing


def _sync(device) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize()


def measure(step, device, *, steps: int, warmup: int, max_seconds: float) -> dict:
    """Median seconds of ``step()`` after ``warmup`` calls; stops early past ``max_seconds`` (>= 3 timed)."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    for _ in range(warmup):
        step()
    _sync(device)
    counter = FlopCounterMode(display=False)
    with counter:
        step()
    flops = counter.get_total_flops()
    _sync(device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    times, start = [], time.perf_counter()
    for i in range(steps):
        t0 = time.perf_counter()
        step()
        _sync(device)
        times.append(time.perf_counter() - t0)
        if i >= 2 and time.perf_counter() - start > max_seconds:
            break
    out = {"step_s": statistics.median(times), "timed_steps": len(times), "flops_per_step": flops}
    if device.type == "cuda":
        out["peak_mem_gib"] = torch.cuda.max_memory_allocated() / 2**30
    return out


# ------------------------------------------------------------------------------------------------ workloads


def bce_step(model, rule, batch_fn):
    """One training step of a CTR-style model through its step rule: ``batch_fn() -> (x, y)``."""
    import torch.nn.functional as F

    def step():
        x, y = batch_fn()

        def closure():
            loss = F.binary_cross_entropy_with_logits(model(x), y)
            loss.backward()
            return loss.detach()

        rule.step(x, closure)

    return step


def _vocab_sizes(fields: int, rows: int) -> list[int]:
    """A skewed split of ``rows`` embedding rows over ``fields`` (a few huge fields, many small ones, as in
    Avazu: device_ip / device_id / site_id dominate)."""
    weights = [1.0 / (i + 1) ** 2 for i in range(fields)]
    total = sum(weights)
    return [max(4, int(rows * w / total)) for w in weights]


def run_deepfm(sh: dict, device, a) -> dict:
    import torch

    from pipeline.core.optim import PlainAdam
    from pipeline.ctr.models import build_model

    torch.manual_seed(0)
    sizes = _vocab_sizes(sh["fields"], sh["rows"])
    model = build_model("deepfm", sizes, embedding_dim=sh["dim"], hidden_units=sh["hidden"], dropout=0.1).to(device)
    emb = model.embedding_parameters()
    ids = {id(p) for p in emb}
    rule = PlainAdam(emb, [p for p in model.parameters() if id(p) not in ids], lr_embed=1e-3, lr_net=1e-3,
                     clip_norm=10.0)
    high = torch.tensor(sizes, device=device)
    g = torch.Generator(device=device).manual_seed(1)
    batch = sh["batch"]

    def batch_fn():
        x = (torch.rand(batch, len(sizes), generator=g, device=device) * high).long().clamp_max(high - 1)
        return x, (torch.rand(batch, generator=g, device=device) < 0.17).float()

    r = measure(bce_step(model, rule, batch_fn), device, steps=a.steps, warmup=a.warmup, max_seconds=a.max_seconds)
    return {**r, "batch": batch, "dtype": "float32", "params": sum(p.numel() for p in model.parameters()),
            "shape": f"24 fields, {sum(sizes):,} rows x {sh['dim']}, MLP {sh['hidden']}"}


def _llm(sh: dict, device, dtype):
    from bench.llm_ctr import QWEN3_06B, random_frozen_qwen3

    return random_frozen_qwen3(QWEN3_06B if sh["llm"] == "qwen3-0.6b" else TINY_QWEN, device, dtype)


def run_llm_ctr(sh: dict, device, a) -> dict:
    import torch

    from bench.llm_ctr import _baseline, _bundle_from_model
    from pipeline.core.optim import PlainAdam
    from pipeline.ctr import llm as L

    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    llm = _llm(sh, device, dtype)
    bundle = _bundle_from_model(llm, sh["prompt_tokens"], answer_ids=(15, 16))
    vocab, batch = 1000, sh["batch"]
    out = {"batch": batch, "dtype": str(dtype).replace("torch.", ""),
           "params": sum(q.numel() for q in llm.parameters()),
           "shape": f"{sh['llm']} ({'random weights'}), prompt {sh['prompt_tokens']} + {sh['fields']} soft tokens"}
    for cache in (True, False):
        model = L.build_llm_ctr(_baseline(sh["fields"], sh["dim"], vocab), bundle, projector_hidden=256,
                                train_encoder=False, prompt_cache=cache, seed=0)
        rule = PlainAdam([], model.trainable_parameters(), lr_embed=1e-3, lr_net=1e-3, clip_norm=10.0)
        g = torch.Generator().manual_seed(1)

        def batch_fn():
            x = torch.randint(1, vocab, (batch, sh["fields"]), generator=g, dtype=torch.int32)
            return x, (torch.rand(batch, generator=g) < 0.2).float().to(model.device)

        r = measure(bce_step(model, rule, batch_fn), device, steps=a.steps, warmup=a.warmup, max_seconds=a.max_seconds)
        out.update({f"{k}_{'cache' if cache else 'nocache'}": v for k, v in r.items()})
        del model, rule
        if device.type == "cuda":
            torch.cuda.empty_cache()
    for k in ("step_s", "flops_per_step", "timed_steps", "peak_mem_gib"):
        if f"{k}_cache" in out:
            out[k] = out[f"{k}_cache"]                  # the headline figure: the pipeline's default (cache on)
    return out


def run_fastformer(sh: dict, device, a) -> dict:
    import torch

    from pipeline.tenrec.ranking import HIST, LIKE, TARGET, Ranker, ranking_loss

    torch.manual_seed(0)
    n_cat = 100
    cat = torch.randint(1, n_cat + 1, (sh["items"] + 1,))
    model = Ranker(sh["items"], n_cat, cat, encoder="fastformer", embedding_dim=sh["dim"], num_layers=sh["layers"],
                   num_heads=sh["heads"], ffn_dim=sh["ffn"], dropout=0.1, max_len=sh["max_len"]).to(device)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3, fused=device.type == "cuda")
    g = torch.Generator(device=device).manual_seed(1)
    batch, L = sh["batch"], sh["max_len"]

    def step():
        x = torch.zeros(batch, HIST + L, dtype=torch.long, device=device)
        x[:, TARGET] = torch.randint(1, sh["items"] + 1, (batch,), generator=g, device=device)
        x[:, LIKE] = (torch.rand(batch, generator=g, device=device) < 0.1).long()
        x[:, HIST:] = torch.randint(1, sh["items"] + 1, (batch, L), generator=g, device=device)
        click = (torch.rand(batch, generator=g, device=device) < 0.5).float()
        opt.zero_grad(set_to_none=True)
        loss = ranking_loss(model(x), click, x[:, LIKE].float(), 1.0, 5.0)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 10.0)
        opt.step()

    r = measure(step, device, steps=a.steps, warmup=a.warmup, max_seconds=a.max_seconds)
    return {**r, "batch": batch, "dtype": "float32", "params": sum(p.numel() for p in model.parameters()),
            "shape": f"{sh['layers']} x {sh['dim']} fastformer, history {L}, {sh['items']:,} items"}


def run_sasrec(sh: dict, device, a) -> dict:
    import numpy as np
    import torch

    from pipeline.seqrec.model import build_model
    from pipeline.seqrec.train import SeqRecTask

    torch.manual_seed(0)
    model = build_model("id", dim=sh["dim"], layers=sh["layers"], heads=sh["heads"], ffn_mult=sh["ffn_mult"],
                        max_len=sh["max_len"], dropout=0.1, num_items=sh["items"]).to(device)
    popularity = np.concatenate([[0.0], 1.0 / np.arange(1, sh["items"] + 1) ** 0.8])      # a Zipf catalogue
    task = SeqRecTask(loss="sampled", num_items=sh["items"], num_negatives=sh["negatives"], popularity=popularity)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3, fused=device.type == "cuda")
    g = torch.Generator(device=device).manual_seed(1)
    batch, L = sh["batch"], sh["max_len"]

    def step():
        x = torch.randint(1, sh["items"] + 1, (batch, L + 1), generator=g, device=device)
        opt.zero_grad(set_to_none=True)
        loss = task.loss(model, x, None)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 10.0)
        opt.step()

    r = measure(step, device, steps=a.steps, warmup=a.warmup, max_seconds=a.max_seconds)
    return {**r, "batch": batch, "dtype": "float32", "params": sum(p.numel() for p in model.parameters()),
            "shape": f"{sh['layers']} x {sh['dim']} SASRec, {L} positions, {sh['items']:,} items, "
                     f"{sh['negatives']} sampled negatives"}


RUNNERS = {"deepfm": run_deepfm, "llm_ctr": run_llm_ctr, "fastformer": run_fastformer, "sasrec": run_sasrec}


def child(a) -> None:
    import torch

    device = torch.device(a.device)
    sh = SHAPES[a.shapes][a.workload]
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else (platform.processor() or "cpu")
    t0 = time.perf_counter()
    r = RUNNERS[a.workload](sh, device, a)
    r.update({"workload": a.workload, "device_name": name, "threads": torch.get_num_threads(),
              "wall_s": time.perf_counter() - t0})
    emit(r)


# ------------------------------------------------------------------------------------------------ report


def derive(r: dict, phase1_rows: int) -> dict:
    d = {"samples_per_s": r["batch"] / r["step_s"]}
    d["tflops"] = r["flops_per_step"] / r["step_s"] / 1e12
    peak = peak_tflops(r["device_name"], r["dtype"])
    d["peak_share"] = d["tflops"] / peak if peak else None
    if r["workload"] == "llm_ctr":
        d["phase1_projected_h"] = phase1_rows / d["samples_per_s"] / 3600
        if "step_s_nocache" in r:
            d["cache_speedup"] = r["step_s_nocache"] / r["step_s_cache"]
    return d


def report(results: dict, a, device_name: str) -> str:
    lines = [f"# GPU benchmark ({a.shapes} shapes) on {device_name}", "",
             "| workload | shape | dtype | batch | step ms | samples/s | GFLOP/step | TFLOP/s | share of peak | "
             "peak memory |", "|---|---|---|---|---|---|---|---|---|---|"]
    notes = []
    for w in WORKLOADS:
        if w not in results:
            continue
        r = results[w]
        if "error" in r:
            lines.append(f"| {w} | – | – | – | – | failed: {r['error']} | – | – | – | – |")
            continue
        d = derive(r, a.phase1_rows)
        share = f"{d['peak_share']:.1%}" if d["peak_share"] is not None else "n/a (no peak for this device)"
        mem = (f"{r['peak_mem_gib']:.1f} GiB (device)" if "peak_mem_gib" in r
               else f"{r.get('vmhwm_mib', r.get('ru_maxrss_mib', 0)):,.0f} MiB (RSS)")
        lines.append(f"| {w} | {r['shape']} | {r['dtype']} | {r['batch']:,} | {r['step_s'] * 1e3:,.1f} | "
                     f"{d['samples_per_s']:,.0f} | {r['flops_per_step'] / 1e9:,.3g} | {d['tflops']:.3g} | {share} | "
                     f"{mem} |")
        if w == "llm_ctr":
            notes.append(f"- LLM-CTR phase 1 over {a.phase1_rows:,} rows (one epoch) at this rate: "
                         f"**{d['phase1_projected_h']:.2f} h** (goal on an H200: <= 1.5 h); prompt cache on vs off: "
                         f"{d.get('cache_speedup', float('nan')):.2f}x step time "
                         f"(off: {r.get('step_s_nocache', float('nan')) * 1e3:,.1f} ms).")
        if w == "deepfm":
            notes.append(f"- DeepFM: {d['samples_per_s']:,.0f} samples/s (goal on an H200: >= 1,000,000).")
    if a.shapes == "tiny":
        notes.append("- tiny shapes: a smoke test of the script (the numbers say nothing about a GPU).")
    return "\n".join(lines + [""] + notes) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--workload", choices=WORKLOADS, help=argparse.SUPPRESS)
    ap.add_argument("--device", default="auto", help="cuda | cpu | auto (cuda when available)")
    ap.add_argument("--shapes", choices=("real", "tiny", "auto"), default="auto",
                    help="real (the default on CUDA) or tiny (the default on CPU)")
    ap.add_argument("--only", default=",".join(WORKLOADS), help="comma-separated workloads")
    ap.add_argument("--steps", type=int, default=10, help="timed steps per workload (at most)")
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--max-seconds", type=float, default=30.0, help="stop timing a workload after this")
    ap.add_argument("--phase1-rows", type=int, default=11_500_000, help="rows of LLM-CTR phase 1 (x1 + x2 20 %%)")
    ap.add_argument("--deepfm-rows", type=int, default=None, help="total DeepFM embedding rows (real shapes)")
    ap.add_argument("--out", type=Path, default=OUT, help="folder for gpu.md / gpu.json (default bench/out)")
    a = ap.parse_args()
    import torch

    if a.device == "auto":
        a.device = "cuda" if torch.cuda.is_available() else "cpu"
    if a.shapes == "auto":
        a.shapes = "real" if a.device.startswith("cuda") else "tiny"
    if a.deepfm_rows:
        SHAPES[a.shapes]["deepfm"]["rows"] = a.deepfm_rows
    if a.child:
        child(a)
        return
    passthrough = ["--device", a.device, "--shapes", a.shapes, "--steps", str(a.steps), "--warmup", str(a.warmup),
                   "--max-seconds", str(a.max_seconds), "--phase1-rows", str(a.phase1_rows)]
    if a.deepfm_rows:
        passthrough += ["--deepfm-rows", str(a.deepfm_rows)]
    results, device_name, t0 = {}, a.device, time.perf_counter()
    for w in [w.strip() for w in a.only.split(",") if w.strip()]:
        if w not in WORKLOADS:
            raise SystemExit(f"--only: unknown workload {w!r} (one of {', '.join(WORKLOADS)})")
        print(f"{w} ...", file=sys.stderr, flush=True)
        try:
            results[w] = run_child(__file__, "--child", "--workload", w, *passthrough)
            device_name = results[w]["device_name"]
        except SystemExit as e:                     # one workload failing (e.g. out of memory) does not stop the rest
            results[w] = {"error": str(e)}
    text = report(results, a, device_name)
    text += f"\nTotal wall time: {time.perf_counter() - t0:,.0f} s.\n"
    print(text)
    a.out.mkdir(parents=True, exist_ok=True)
    (a.out / "gpu.md").write_text(text)
    (a.out / "gpu.json").write_text(json.dumps(results, indent=2) + "\n")
    if any("error" in r for r in results.values()):
        raise SystemExit(1)


if __name__ == "__main__":
    main()
