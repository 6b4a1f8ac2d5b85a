"""LLM-CTR benchmark: what the prompt cache buys, and how fast phase 1 / phase 2 train.

1. Training-step time (forward + backward + Adam over the trainable parts) with and without the prompt KV
   cache, at the default prompt length, on the embedded tiny Qwen3 (params.yaml ``llm.tiny``) and on a
   randomly initialised model of Qwen3-0.6B's shapes (one small batch on CPU: no download). The
   theoretical gain is the token-count ratio (P + F) / F (P prompt tokens, F soft tokens); the target is
   ≥ 0.8 of it.
2. Phase 1 (projector) and phase 2 (encoder + projector) training samples/s with the default batch size,
   and the ones the stages recorded (reports/avazu/llm_phase*.json) when a `dvc repro` has run.
3. Where a CUDA GPU is available, a few phase-1 steps of the random Qwen3-0.6B-shaped model in bf16:
   samples/s and peak memory; otherwise the note says there was none.
4. SmolLM2-135M-Instruct (a real pretrained Llama, ``llm.source: smollm2``; needs ``bash bin/setup
   --smollm2``): phase-1 and phase-2 steps with and without the prompt cache on CPU fp32 at the real prompt
   (its own tokenizer), and in bf16 on CUDA where present; skipped with a note when the extra is absent.

Each measurement runs in its own child process (bench/common.py). ``python bench/llm_ctr.py`` prints the
table and writes bench/out/llm_ctr.md. ``--quick`` shrinks the step counts (smoke test).
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import OUT, ROOT, emit, run_child  # noqa: E402

CPU_TIMES: list[float] = []     # process CPU seconds of the timed steps (robust to a shared, busy machine)

QWEN3_06B = dict(vocab_size=151936, hidden_size=1024, intermediate_size=3072, num_hidden_layers=28,
                 num_attention_heads=16, num_key_value_heads=8, head_dim=128, max_position_embeddings=40960,
                 tie_word_embeddings=True, rms_norm_eps=1e-6,
                 rope_parameters={"rope_type": "default", "rope_theta": 1_000_000.0})


def random_frozen_qwen3(config: dict, device, dtype):
    """A randomly initialised (seed 0), frozen, eval-mode Qwen3 causal LM of ``config``'s shapes (SDPA)."""
    import torch
    from transformers import Qwen3Config, Qwen3ForCausalLM

    torch.manual_seed(0)
    with torch.device(device):
        llm = Qwen3ForCausalLM(Qwen3Config(**config)).to(dtype)
    llm.config._attn_implementation = "sdpa"
    llm.eval()
    for q in llm.parameters():
        q.requires_grad_(False)
    return llm


def _params():
    import yaml

    return yaml.safe_load((ROOT / "params.yaml").read_text())


def _baseline(fields: int, dim: int, vocab: int, seed: int = 0):
    import torch

    from pipeline.ctr.llm import Baseline
    from pipeline.ctr.models import build_model

    torch.manual_seed(seed)
    m = build_model("deepfm", [vocab] * fields, embedding_dim=dim, hidden_units=[16], encoder="gated")
    with torch.no_grad():
        for t in m.embedding.tables:
            t.weight[1:].normal_(0, 0.1)
    return Baseline(m.eval(), m.config)


def _bundle_from_model(llm, prompt_len: int, answer_ids=(15, 16)):
    import torch

    from pipeline.ctr.llm_init import LlmBundle

    g = torch.Generator().manual_seed(0)
    vocab = llm.config.vocab_size
    prompt = torch.randint(100, vocab - 1, (prompt_len,), generator=g).tolist()
    return LlmBundle(llm, prompt, list(answer_ids), Path("."))


def _step_times(model, batch: int, fields: int, vocab: int, steps: int, warmup: int, cache: bool) -> list[float]:
    import torch
    import torch.nn.functional as F

    from pipeline.core.optim import PlainAdam

    model.prompt_cache = cache
    rule = PlainAdam([], model.trainable_parameters(), lr_embed=1e-3, lr_net=1e-3, clip_norm=10.0)
    g = torch.Generator().manual_seed(1)
    times = []
    for i in range(warmup + steps):
        x = torch.randint(1, vocab, (batch, fields), generator=g, dtype=torch.int32)
        y = (torch.rand(batch, generator=g) < 0.2).float()

        def closure():
            loss = F.binary_cross_entropy_with_logits(model(x), y.to(model.device))
            loss.backward()
            return loss.detach()

        if model.device.type == "cuda":
            torch.cuda.synchronize()
        t0, c0 = time.perf_counter(), time.process_time()
        rule.step(x, closure)
        if model.device.type == "cuda":
            torch.cuda.synchronize()
        if i >= warmup:
            times.append(time.perf_counter() - t0)
            CPU_TIMES.append(time.process_time() - c0)
    return times


# ------------------------------------------------------------------------------------------------ children


def child_tiny(args) -> None:
    """Default tiny LLM: cache vs no cache (phase 1 and 2) at the default batch size and prompt."""
    import torch

    from pipeline.ctr import llm as L
    from pipeline.ctr import llm_init as li

    p = _params()
    lp, t = p["llm"], p["llm"]["tiny"]
    fields, dim, vocab = 24, p["ctr"]["embedding_dim"], 1000
    with tempfile.TemporaryDirectory() as d:
        li.build_tiny(Path(d), prompt=lp["prompt"], answer_tokens=lp["answer_tokens"], seed=p["seed"],
                      hidden_size=t["hidden_size"], intermediate_size=t["intermediate_size"],
                      num_layers=t["num_layers"], num_heads=t["num_heads"], num_kv_heads=t["num_kv_heads"],
                      head_dim=t["head_dim"], vocab_size=t["vocab_size"],
                      max_position_embeddings=t["max_position_embeddings"])
        bundle = li.load_bundle(Path(d), prompt=lp["prompt"], answer_tokens=lp["answer_tokens"],
                                dtype=torch.float32, device=torch.device("cpu"))
    batch, hidden = p["llm_train"]["batch_size"], p["llm_ctr"]["projector_hidden"]
    out = {"prompt_tokens": len(bundle.prompt_ids), "fields": fields, "batch": batch,
           "threads": torch.get_num_threads()}
    for phase in (1, 2):
        for cache in (True, False):
            m = L.build_llm_ctr(_baseline(fields, dim, vocab), bundle, projector_hidden=hidden,
                                train_encoder=(phase == 2), prompt_cache=cache, seed=0)
            CPU_TIMES.clear()
            ts = _step_times(m, batch, fields, vocab, args.steps, 2, cache)
            out[f"phase{phase}_{'cache' if cache else 'nocache'}_s"] = statistics.median(ts)
            out[f"phase{phase}_{'cache' if cache else 'nocache'}_cpu_s"] = statistics.median(CPU_TIMES)
    out["loadavg"] = __import__("os").getloadavg()[0]
    emit(out)


def child_qwen06b(args) -> None:
    """A random Qwen3-0.6B-shaped model: one small-batch training step with and without the cache (CPU),
    or a few bf16 phase-1 steps on CUDA."""
    import torch

    from pipeline.ctr import llm as L

    device = torch.device(args.device)
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    t0 = time.perf_counter()
    llm = random_frozen_qwen3(QWEN3_06B, device, dtype)
    build_s = time.perf_counter() - t0
    fields, dim, vocab = 24, 16, 1000
    bundle = _bundle_from_model(llm, args.prompt_tokens)
    out = {"device": torch.cuda.get_device_name(0) if device.type == "cuda" else platform.processor() or "cpu",
           "dtype": str(dtype).replace("torch.", ""), "params": sum(q.numel() for q in llm.parameters()),
           "build_s": build_s, "batch": args.batch, "prompt_tokens": args.prompt_tokens, "fields": fields}
    modes = (True, False) if args.both else (True,)
    for cache in modes:
        m = L.build_llm_ctr(_baseline(fields, dim, vocab), bundle, projector_hidden=256, train_encoder=False,
                            prompt_cache=cache, seed=0)
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats()
        CPU_TIMES.clear()
        ts = _step_times(m, args.batch, fields, vocab, args.steps, args.warmup, cache)
        key = "cache" if cache else "nocache"
        out[f"{key}_s"] = statistics.median(ts)
        out[f"{key}_cpu_s"] = statistics.median(CPU_TIMES)
        if device.type == "cuda":
            out[f"{key}_peak_mem_gib"] = torch.cuda.max_memory_allocated() / 2**30
    emit(out)


def child_smollm2(args) -> None:
    """SmolLM2-135M-Instruct converted from the packaged GGUF: cache vs no cache, phase 1 and 2."""
    import torch

    from pipeline.ctr import llm as L
    from pipeline.ctr import llm_init as li

    p = _params()
    lp = p["llm"]
    device = torch.device(args.device)
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    fields, dim, vocab = 24, p["ctr"]["embedding_dim"], 1000
    with tempfile.TemporaryDirectory() as d:
        li.convert_smollm2(Path(d))
        bundle = li.load_bundle(Path(d), prompt=lp["prompt"], answer_tokens=lp["answer_tokens"], dtype=dtype,
                                device=device)
    out = {"prompt_tokens": len(bundle.prompt_ids), "fields": fields, "batch": args.batch,
           "params": sum(q.numel() for q in bundle.llm.parameters()), "dtype": str(dtype).replace("torch.", ""),
           "device": torch.cuda.get_device_name(0) if device.type == "cuda" else "cpu",
           "threads": torch.get_num_threads()}
    for phase in (1, 2):
        for cache in (True, False):
            m = L.build_llm_ctr(_baseline(fields, dim, vocab), bundle, projector_hidden=p["llm_ctr"]["projector_hidden"],
                                train_encoder=(phase == 2), prompt_cache=cache, seed=0)
            CPU_TIMES.clear()
            ts = _step_times(m, args.batch, fields, vocab, args.steps, args.warmup, cache)
            out[f"phase{phase}_{'cache' if cache else 'nocache'}_s"] = statistics.median(ts)
            out[f"phase{phase}_{'cache' if cache else 'nocache'}_cpu_s"] = statistics.median(CPU_TIMES)
    emit(out)


# ------------------------------------------------------------------------------------------------ parent


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--child", choices=["tiny", "qwen06b", "smollm2"])
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--batch", type=int, default=2)
    ap.add_argument("--prompt-tokens", type=int, default=0)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--both", action="store_true")
    ap.add_argument("--quick", action="store_true", help="fewer steps (smoke test)")
    ap.add_argument("--skip-06b", action="store_true", help="skip the Qwen3-0.6B-shaped CPU step")
    ap.add_argument("--skip-smollm2", action="store_true", help="skip the SmolLM2-135M steps")
    ap.add_argument("--threads", type=int, default=0, help="torch threads in the children (0 = torch's default; "
                    "1 avoids oversubscription on a machine shared with other jobs)")
    args = ap.parse_args()
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    if args.child == "tiny":
        return child_tiny(args)
    if args.child == "qwen06b":
        return child_qwen06b(args)
    if args.child == "smollm2":
        return child_smollm2(args)

    import torch

    me = Path(__file__)
    th = ("--threads", str(args.threads)) if args.threads else ()
    tiny = run_child(me, "--child", "tiny", "--steps", "2" if args.quick else "6", *th)
    P, F = tiny["prompt_tokens"], tiny["fields"]
    theory = (P + F) / F
    rows = []
    for phase in (1, 2):
        c, n = tiny[f"phase{phase}_cache_s"], tiny[f"phase{phase}_nocache_s"]
        rows.append((f"tiny Qwen3 (params.yaml), phase {phase}, batch {tiny['batch']}", P, F, c, n,
                     tiny["batch"] / c, tiny["batch"] / n, tiny[f"phase{phase}_cache_cpu_s"],
                     tiny[f"phase{phase}_nocache_cpu_s"]))
    big = None
    if not args.skip_06b:
        big = run_child(me, "--child", "qwen06b", "--device", "cpu", "--batch", "2", "--steps", "1",
                        "--warmup", "1", "--prompt-tokens", str(P), "--both", *th)
        rows.append((f"Qwen3-0.6B shapes (random, {big['params'] / 1e6:.0f}M), phase 1, batch 2", P, F,
                     big["cache_s"], big["nocache_s"], 2 / big["cache_s"], 2 / big["nocache_s"], big["cache_cpu_s"],
                     big["nocache_cpu_s"]))
    smol, smol_note = [], ""
    import importlib.util

    from pipeline.ctr.llm_init import SMOLLM2_INSTALL, SMOLLM2_PACKAGE

    if args.skip_smollm2:
        smol_note = "SmolLM2-135M: skipped (--skip-smollm2)."
    elif any(importlib.util.find_spec(m) is None for m in (SMOLLM2_PACKAGE, "gguf", "accelerate")):
        smol_note = f"SmolLM2-135M: skipped, the extra is not installed ({SMOLLM2_INSTALL})."
    else:
        smol_devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
        for dev in smol_devices:
            batch = "64" if dev == "cuda" else "16"
            smol.append(run_child(me, "--child", "smollm2", "--device", dev, "--batch", batch,
                                  "--steps", "1" if args.quick else "3", "--warmup", "1", *th))
        for r in smol:
            for phase in (1, 2):
                c, n = r[f"phase{phase}_cache_s"], r[f"phase{phase}_nocache_s"]
                rows.append((f"SmolLM2-135M-Instruct (pretrained, {r['params'] / 1e6:.0f}M, {r['dtype']} on "
                             f"{r['device']}), phase {phase}, batch {r['batch']}", r["prompt_tokens"], r["fields"],
                             c, n, r["batch"] / c, r["batch"] / n, r[f"phase{phase}_cache_cpu_s"],
                             r[f"phase{phase}_nocache_cpu_s"]))
    gpu = None
    if torch.cuda.is_available():
        gpu = run_child(me, "--child", "qwen06b", "--device", "cuda", "--batch", "64", "--steps", "5",
                        "--warmup", "2", "--prompt-tokens", str(P), "--both")
    stage = {}
    for phase in (1, 2):
        f = ROOT / "reports" / "avazu" / f"llm_phase{phase}.json"
        if f.is_file():
            r = json.loads(f.read_text())
            stage[phase] = {s: m.get("train_samples_per_s") for s, m in r["metrics"].items()}
            stage[phase]["_cache"] = r.get("prompt_cache")

    lines = ["# LLM-CTR benchmark", "",
             f"CPU: {platform.processor() or platform.machine()}, torch {torch.__version__}, "
             f"{tiny['threads']} threads, load average {tiny['loadavg']:.1f} during the run. Step = forward + "
             "backward + Adam over the trainable parts (median of timed steps after warm-up); wall time and "
             "process CPU time (the latter is what to compare on a busy, shared machine).", "",
             f"Prompt: {P} tokens (params.yaml `llm.prompt`, tiny tokenizer); {F} soft tokens; theoretical "
             f"token-count ratio (P + F) / F = {theory:.2f}.", "",
             "| model | P | F | wall s/step cached | uncached | wall speed-up | CPU s/step cached | uncached | CPU speed-up | CPU speed-up / theoretical | samples/s cached (wall) | uncached |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for name, p_, f_, c, n, sc, sn, cc, cn in rows:
        lines.append(f"| {name} | {p_} | {f_} | {c:.3f} | {n:.3f} | {n / c:.2f}x | {cc:.3f} | {cn:.3f} | "
                     f"{cn / cc:.2f}x | {cn / cc / ((p_ + f_) / f_):.2f} | {sc:,.2f} | {sn:,.2f} |")
    lines += [""]
    if smol:
        sp = smol[0]["prompt_tokens"]
        lines += [f"SmolLM2's tokenizer gives the prompt {sp} tokens: its theoretical ratio is "
                  f"({sp} + {F}) / {F} = {(sp + F) / F:.2f} (each row's 'CPU speed-up / theoretical' uses its own P).",
                  ""]
    if smol_note:
        lines += [smol_note, ""]
    if stage:
        lines += ["Samples/s recorded by the stages on the embedded default (reports/avazu/llm_phase*.json, "
                  "whole fit incl. validation):", "",
                  "| phase | " + " | ".join(s for s in stage[min(stage)] if s != "_cache") + " | prompt cache |",
                  "|---|" + "---:|" * (len(stage[min(stage)]) - 1) + "---|"]
        for ph, r in stage.items():
            lines.append(f"| {ph} | " + " | ".join(f"{v:,.0f}" for k, v in r.items() if k != "_cache")
                         + f" | {r['_cache']} |")
        lines += [""]
    if gpu:
        lines += [f"GPU ({gpu['device']}, {gpu['dtype']}): random Qwen3-0.6B-shaped model, phase 1, batch "
                  f"{gpu['batch']}: {gpu['batch'] / gpu['cache_s']:,.0f} samples/s with the cache "
                  f"(peak {gpu['cache_peak_mem_gib']:.1f} GiB), {gpu['batch'] / gpu['nocache_s']:,.0f} without "
                  f"(peak {gpu['nocache_peak_mem_gib']:.1f} GiB)."]
    else:
        lines += ["GPU: no CUDA device was available for this run, so the bf16 Qwen3-0.6B-shaped timing was "
                  "not taken (the benchmark does it automatically where `torch.cuda.is_available()`)."]
    text = "\n".join(lines) + "\n"
    print(text)
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "llm_ctr.md").write_text(text, encoding="utf-8")


if __name__ == "__main__":
    main()
