"""Where one CTR training step's time goes: a ``torch.profiler`` profile of the default DeepFM step on this
machine, per op and per category, against the GEMM-only ceiling measured in the same run.

The step is the pipeline's own: ``Trainer.fit`` (pipeline.core.train) on the default ``ctr`` / ``train``
sections (DeepFM with the ``ctr.deepfm.encoder``, MLP [400, 400, 400], batch 4096) with Adam and with the
default Helen (two forward/backward passes a step), on the same synthetic world as bench/ctr_train.py
(``--rows``, cached under bench/out/ctr_data/). For each optimizer:

* the wall time of ``--steps`` steps (after ``--warmup``), and the profile's op self-times (on the calling
  thread: an op's intra-op parallel work is inside its time) grouped into
  - **MLP / dense GEMMs** (``aten::mm``, ``addmm``, ``bmm``, ...): the model's FLOPs,
  - **embedding gather / scatter** (``aten::embedding``, its backward, ``index_select`` / ``index_add_``,
    the sort of the backward's indices, ...),
  - **optimizer** (fused Adam, the ``_foreach`` clipping and the grad-norm),
  - **data slicing** (the batch's ``index_select`` from the contiguous tensors: measured by iterating
    ``TensorData.batches`` alone and taken out of the embedding bucket),
  - **other ops** (activations, FM / encoder arithmetic, loss, elementwise),
  - **Python and framework overhead** = wall − all op self-times;
* the top ops by self time;
* **the GEMM ceiling**: the model's dense GEMMs alone (every Linear: MLP, encoder, heads; (forward X·W and backward dX, dW for every layer of the
  step's shapes, fp32, the same threads)) in a loop: the samples/s no implementation of this model on
  this machine can beat (Helen: half of it, as it does every GEMM twice).

``python bench/ctr_step_profile.py [--rows 1000000] [--steps 20]`` prints the table and writes
bench/out/ctr_step_profile.md. A benchmark, not a test.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import OUT, emit, run_child  # noqa: E402

CATEGORIES = {
    "gemm": ("aten::mm", "aten::addmm", "aten::bmm", "aten::baddbmm", "aten::_addmm_activation"),
    "embedding": ("aten::embedding", "aten::embedding_dense_backward", "aten::embedding_backward",
                  "aten::index_select", "aten::index_add_", "aten::index", "aten::_index_put_impl_",
                  "aten::sort", "aten::unique_dim", "aten::_unique2", "aten::take", "aten::gather",
                  "aten::scatter_add_", "aten::embedding_renorm_", "aten::_embedding_bag",
                  "aten::_embedding_bag_backward"),
    "optimizer": ("aten::_fused_adam_", "aten::_fused_adamw_", "aten::_foreach_norm", "aten::_foreach_mul_",
                  "aten::_foreach_add_", "aten::_foreach_addcmul_", "aten::_foreach_addcdiv_",
                  "aten::_foreach_sqrt", "aten::_foreach_div_", "aten::_foreach_lerp_", "aten::linalg_vector_norm",
                  "aten::clamp", "aten::zero_", "aten::fill_"),
}
LABELS = {"gemm": "MLP / dense GEMMs", "embedding": "embedding gather / scatter", "optimizer": "optimizer",
          "data": "data slicing", "other": "other ops", "python": "Python / framework overhead"}


def category(name: str) -> str:
    for cat, names in CATEGORIES.items():
        if name in names or (cat == "optimizer" and name.startswith("aten::_foreach")):
            return cat
    return "other"


def child_profile(a) -> None:
    import torch
    from torch.profiler import ProfilerActivity, profile

    from bench.ctr_train import _load, _trainer

    data, sizes, _ = _load(Path(a.data))
    train = data["train"]
    trainer, model = _trainer("deepfm", a.encoder, a.optim, sizes, Path(a.work) / "ckpt",
                              {"checkpoint_every_steps": 0, "epochs": 1}, dropout_impl=a.dropout_impl)
    bs = trainer.cfg.batch_size
    trainer.cfg.max_steps = a.warmup
    trainer.fit(train, train, resume=False)
    # data slicing alone: the same batches the loop takes
    t0 = time.perf_counter()
    for i, _ in zip(range(a.steps), train.batches(bs, seed=1, epoch=0)):
        pass
    data_s = time.perf_counter() - t0
    trainer.cfg.max_steps = a.steps
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        t0 = time.perf_counter()
        trainer.fit(train, train, resume=False)
        wall = time.perf_counter() - t0
    cats = dict.fromkeys(LABELS, 0.0)
    ops = []
    for e in prof.key_averages():
        self_s = e.self_cpu_time_total / 1e6
        if self_s <= 0:
            continue
        cats[category(e.key)] += self_s
        ops.append({"op": e.key, "self_s": self_s, "calls": e.count})
    cats["embedding"] = max(0.0, cats["embedding"] - data_s)     # the batch slicing is an index_select too
    cats["data"] = data_s
    cats["python"] = max(0.0, wall - sum(v for k, v in cats.items() if k != "python"))
    ops.sort(key=lambda o: -o["self_s"])
    emit({"optim": a.optim, "dropout_impl": a.dropout_impl, "encoder": a.encoder, "steps": a.steps, "batch": bs, "wall_s": wall,
          "samples_per_s": a.steps * bs / wall, "categories": cats, "top_ops": ops[:12],
          "threads": torch.get_num_threads(), "linears": linear_shapes(model)})


def linear_shapes(model) -> list[list[int]]:
    """(in, out) of every Linear of the model (MLP, encoder, heads): its dense GEMMs."""
    from torch import nn

    return [[m.in_features, m.out_features] for m in model.modules() if isinstance(m, nn.Linear)]


def child_ceiling(a) -> None:
    """The model's dense GEMMs alone at the step's shapes: forward and both backward products of every
    Linear (``--linears`` in:out pairs)."""
    import torch

    torch.manual_seed(0)
    pairs = [tuple(int(v) for v in p.split(":")) for p in a.linears.split(",")]
    xs = [torch.randn(a.batch, i) for i, _ in pairs]
    ws = [torch.randn(i, o) * 0.01 for i, o in pairs]
    gs = [torch.randn(a.batch, o) for _, o in pairs]

    def gemms():
        for x, w, g in zip(xs, ws, gs):
            x @ w                     # forward
            g @ w.T                   # dL/dX
            x.T @ g                   # dL/dW

    for _ in range(3):
        gemms()
    reps, t0 = 0, time.perf_counter()
    while reps < a.steps or time.perf_counter() - t0 < 2.0:
        gemms()
        reps += 1
    dt = (time.perf_counter() - t0) / reps
    flops = sum(3 * 2 * a.batch * i * o for i, o in pairs)
    emit({"step_s": dt, "samples_per_s": a.batch / dt, "gflops": flops / dt / 1e9, "linears": pairs,
          "threads": torch.get_num_threads()})


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--child", choices=("profile", "ceiling"))
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--seed", type=int, default=2024)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--optims", default="adam,helen")
    ap.add_argument("--dropout-impls", default="torch,fast",
                    help="ctr.dropout_impl values to profile each optimizer with (torch: nn.Dropout, FuxiCTR's)")
    ap.add_argument("--dropout-impl", help=argparse.SUPPRESS)
    ap.add_argument("--encoder", default="gen", help="ctr.deepfm.encoder of the profiled model")
    ap.add_argument("--data", help=argparse.SUPPRESS)
    ap.add_argument("--work", help=argparse.SUPPRESS)
    ap.add_argument("--optim", help=argparse.SUPPRESS)
    ap.add_argument("--batch", type=int, default=4096, help=argparse.SUPPRESS)
    ap.add_argument("--linears", default="384:400,400:400,400:400,400:1", help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.child == "profile":
        return child_profile(a)
    if a.child == "ceiling":
        return child_ceiling(a)

    from bench.ctr_train import ensure_data

    data_dir, _ = ensure_data(a.rows, a.seed)
    work = OUT / "ctr_step_profile"
    work.mkdir(parents=True, exist_ok=True)
    runs = [run_child(__file__, "--child", "profile", "--data", str(data_dir), "--work", str(work), "--optim", o,
                      "--encoder", a.encoder, "--steps", str(a.steps), "--warmup", str(a.warmup), "--dropout-impl", d)
            for o in a.optims.split(",") for d in a.dropout_impls.split(",")]
    name = {id(r): f"{r['optim']}, dropout {r['dropout_impl']}" for r in runs}
    best = {o: max((r for r in runs if r["optim"] == o), key=lambda r: r["samples_per_s"]) for o in a.optims.split(",")}
    r0 = runs[0]
    ceiling = run_child(__file__, "--child", "ceiling", "--batch", str(r0["batch"]), "--steps", str(a.steps),
                        "--linears", ",".join(f"{i}:{o}" for i, o in r0["linears"]))
    lines = [f"# One DeepFM step, profiled ({a.rows:,}-row world, batch {r0['batch']:,}, {r0['threads']} threads, "
             f"encoder {a.encoder})", "",
             "| | " + " | ".join(name[id(r)] for r in runs) + " |", "|---|" + "---|" * len(runs)]
    lines.append("| samples/s | " + " | ".join(f"{r['samples_per_s']:,.0f}" for r in runs) + " |")
    lines.append("| ms / step | " + " | ".join(f"{1e3 * r['wall_s'] / r['steps']:.1f}" for r in runs) + " |")
    for cat, label in LABELS.items():
        cells = [f"{1e3 * r['categories'][cat] / r['steps']:.1f} ms ({r['categories'][cat] / r['wall_s']:.0%})"
                 for r in runs]
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    lines += ["", f"GEMM-only ceiling (the model's Linear layers (in, out) {ceiling['linears']}: forward + backward "
              "GEMMs alone, fp32): "
              f"{ceiling['step_s'] * 1e3:.1f} ms = **{ceiling['samples_per_s']:,.0f} samples/s** "
              f"({ceiling['gflops']:.0f} GFLOP/s); "
              + "; ".join(f"{o} (fastest: {name[id(r)]}) reaches "
                          f"{r['samples_per_s'] / (ceiling['samples_per_s'] / (2 if o in ('sam', 'helen') else 1)):.0%}"
                          + (" of half of it (two passes a step)" if o in ("sam", "helen") else " of it")
                          for o, r in best.items()) + ".", ""]
    for r in runs:
        lines.append(f"Top ops ({name[id(r)]}): " + ", ".join(
            f"{o['op']} {1e3 * o['self_s'] / r['steps']:.1f} ms" for o in r["top_ops"][:8]))
    text = "\n".join(lines) + "\n"
    print(text)
    (OUT / "ctr_step_profile.md").write_text(text)
    (OUT / "ctr_step_profile.json").write_text(json.dumps({"runs": runs, "ceiling": ceiling}, indent=2) + "\n")


if __name__ == "__main__":
    main()
