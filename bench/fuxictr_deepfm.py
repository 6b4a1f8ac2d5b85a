"""FuxiCTR 2.3.10's DeepFM on the Avazu x4 layout: the reference side of ``bench/ctr_train.py``.

What it does
------------
FuxiCTR is not a dependency of this project. This file has two sub-commands:

* ``setup`` -- run with the project's python. Creates a throw-away virtualenv (default
  ``bench/out/fuxictr-venv``) and installs, in this order, ``torch==2.13.0`` (resolves to the local
  ``2.13.0+cpu`` wheel; a bare ``torch`` or a newer one would pull GBs of CUDA wheels) and then
  ``fuxictr==2.3.10 "polars<2"``. A marker file in the venv makes a second call instant. The venv's
  python path is the last line of stdout (pip's output goes to stderr)::

      python bench/fuxictr_deepfm.py setup --venv bench/out/fuxictr-venv

* ``run`` -- runs *inside* that venv. Reads ``train.csv`` / ``valid.csv`` / ``test.csv`` of ``--data``
  (raw Kaggle Avazu columns, the reczoo Avazu_x4 layout; the ``*.oracle.csv`` files are ignored),
  preprocesses them with FuxiCTR's own pipeline, trains DeepFM with FuxiCTR's ``BaseModel.fit`` and
  evaluates the best checkpoint on test::

      bench/out/fuxictr-venv/bin/python bench/fuxictr_deepfm.py run \\
          --data DIR --work WORKDIR --out result.json [--epochs 4 --batch-size 4096 ...]

  Feature config = FuxiCTR's/BARS' Avazu_x4 dataset config: ``id`` inactive, label ``click`` (float),
  ``hour`` -> ``convert_hour`` (hour of day), the 21 raw categorical columns, ``weekday`` ->
  ``convert_weekday``, ``weekend`` -> ``convert_weekend`` (the ``preprocess`` key, executed by
  ``fuxictr.datasets.avazu.CustomizedFeatureProcessor``): 24 categorical fields,
  ``min_categr_count = --min-count``. ``build_dataset`` fits the vocab with polars and writes
  ``train/valid/test.parquet`` through Ray Data; ``RankDataLoader(data_format="parquet")`` reads
  them back with Ray Data. ``preprocess_seconds`` covers read + vocab fit + transform of the three
  splits (``preprocess_fit_seconds`` / ``preprocess_transform_seconds`` split it).

  The model is assembled here (the 2.3.10 wheel ships no ``model_zoo``): a ``BaseModel`` subclass
  with ``FeatureEmbedding``, ``FactorizationMachine`` (which in 2.3.10 *contains* the first-order
  ``LogisticRegression`` term plus a bias -- so no separate LR layer is added, that would count the
  linear term twice), an ``MLP_Block`` over the flattened embeddings, logit = FM + MLP, sigmoid.
  Training: ``fit(train_gen, validation_data=valid_gen, epochs)`` with FuxiCTR's semantics: one
  validation pass per epoch, monitor (AUC by default, max), lr x0.1 on every non-improving epoch
  (floor 1e-6), early stop after ``--patience`` non-improving epochs, grad-norm clip 10, best
  checkpoint reloaded at the end, then ``evaluate(test_gen)``.

Output
------
``--out`` JSON: timings (``preprocess_seconds``, per-epoch ``epochs[*].train_seconds`` = epoch wall
minus its validation pass, which is timed separately by hooking ``eval_step``, hence
``epoch_timing_includes_eval: false``), ``train_samples_per_second`` (train rows x epochs run / total
train seconds), ``peak_rss_mib`` (ru_maxrss of this process), ``peak_rss_children_mib`` (ru_maxrss of
the largest reaped descendant -- Ray's workers/raylet, read after ``ray.shutdown()``),
``peak_tree_rss_sampled_mib`` (sum of VmRSS of this process and all its descendants, sampled from
/proc every 0.5 s; shared memory such as Ray's object store is counted once per process that maps
it), test ``auc`` / ``logloss`` (FuxiCTR's ``evaluate``), ``valid_auc`` per epoch, ``best_epoch``,
``epochs_run``, row counts, versions. ``WORKDIR/test_pred.npy`` (float32) holds the test
predictions and ``WORKDIR/test_label.npy`` the labels in the same order; ``pred_order`` is ``"csv"``
when that order was verified to be the CSV's row order (labels and the encoded ``device_ip`` column
of every batch are compared with test.parquet, which ``build_dataset`` writes sorted by the CSV row
index, and the labels with the CSV itself), else ``"loader"``. Every FuxiCTR file (``data/`` =
data_root, ``checkpoints/`` = model_root with the log and the ``.model`` checkpoint) lies under
WORKDIR; the dataset folder is deleted first so that each run really preprocesses.

Quirks met (and why)
--------------------
* polars must be < 2: ``FeatureProcessor.read_data`` calls ``pl.scan_csv(dtypes=...)``, the
  keyword polars 2 removed (1.x only warns that it was renamed ``schema_overrides``).
* fuxictr 2.3.10 does not depend on torch at all, so torch must be installed first and pinned
  by hand; with the order above pip never touches torch again.
* The venv's bundled pip (23.x) prints "Location 'file:///opt/pypi.../' is ignored" warnings
  for this machine's extra local indexes; harmless, the wheels come from the registry and
  ``/opt/wheels``.
* Ray: both ``build_dataset`` and the parquet loader call ``ray.init()`` with no ``num_cpus`` and
  the dashboard on; this file initialises Ray first (``--ray-num-cpus``, default 2, no dashboard,
  ERROR logging, no usage stats, Ray Data progress bars off) so theirs become no-ops, and always
  calls ``ray.shutdown()`` so the process exits. Ray's session files stay in its default temp
  dir (``/tmp/ray``): a temp dir under WORKDIR can exceed the AF_UNIX socket path limit.
* ``build_dataset`` splits the transform into ``os.cpu_count() // 2`` Ray tasks (1 on a 2-core
  machine; it would be 0 -- and fail -- on a 1-core one) and the tokenizer encodes each value with
  a Python dict lookup, so preprocessing is CPU-bound Python.
* ``RankDataLoader`` returns the loaders directly in 2.3.10 (no ``make_iterator()`` as in the
  GitHub ``run_expid.py``); ``--num-workers`` is what FuxiCTR calls ``num_workers``: Ray Data's
  ``prefetch_batches``, not DataLoader processes. With ``shuffle=True`` and one parquet file
  every epoch does ``materialize().random_shuffle()`` (a full Ray shuffle), inside the timed epoch.
  That shuffle is not seeded (``seed_everything`` seeds python/numpy/torch, not Ray), so two runs
  with the same ``--seed`` differ slightly (test AUC 0.7310 vs 0.7318 on the 48k-row smoke data).
* Test order: Ray Data does not preserve order by default; ``DataContext.execution_options.
  preserve_order`` is switched on for the test pass only (training is left at FuxiCTR's default).
* ``FeatureMap.sum_emb_out_dim`` needs ``embedding_dim`` passed to ``FeatureMap.load``; the
  checkpoint dir must exist before the first save (``set_logger`` creates it).

This file must stay importable by the project's python without fuxictr: every fuxictr / ray /
polars / torch import is inside a function.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

FUXICTR_VERSION = "2.3.10"
TORCH_REQ = "torch==2.13.0"
POLARS_REQ = "polars<2"
INSTALL_STEPS = ([TORCH_REQ], [f"fuxictr=={FUXICTR_VERSION}", POLARS_REQ])
MARKER = ".recdag-fuxictr-setup.json"
DATASET_ID = "avazu_x4_bench"
MODEL_ID = "DeepFM"
RAW_CATEGORICAL = ["C1", "banner_pos", "site_id", "site_domain", "site_category", "app_id",
                   "app_domain", "app_category", "device_id", "device_ip", "device_model",
                   "device_type", "device_conn_type", "C14", "C15", "C16", "C17", "C18", "C19",
                   "C20", "C21"]
ORDER_CHECK_COLUMN = "device_ip"       # high-cardinality column used to verify the test order


# --------------------------------------------------------------------------------------- setup
def _venv_python(venv: Path) -> Path:
    return venv / ("Scripts/python.exe" if os.name == "nt" else "bin/python")


def cmd_setup(args: argparse.Namespace) -> int:
    venv = Path(args.venv).resolve()
    py = _venv_python(venv)
    marker = venv / MARKER
    wanted = {"steps": [list(s) for s in INSTALL_STEPS]}
    if not args.force and py.exists() and marker.exists():
        try:
            if json.loads(marker.read_text()).get("steps") == wanted["steps"]:
                print(f"fuxictr venv ready (marker {marker})", file=sys.stderr)
                print(py)
                return 0
        except (OSError, ValueError):
            pass
    t0 = time.perf_counter()
    if not py.exists():
        print(f"creating venv {venv}", file=sys.stderr)
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True,
                       stdout=sys.stderr)
    for step in INSTALL_STEPS:          # order matters: torch (CPU wheel) first
        print("pip install " + " ".join(step), file=sys.stderr)
        subprocess.run([str(py), "-m", "pip", "install", "--disable-pip-version-check", *step],
                       check=True, stdout=sys.stderr)
    probe = ("import fuxictr, torch, polars, ray, json; print(json.dumps({'fuxictr': "
             "fuxictr.__version__, 'torch': torch.__version__, 'polars': polars.__version__, "
             "'ray': ray.__version__, 'cuda': torch.version.cuda}))")
    out = subprocess.run([str(py), "-c", probe], check=True, capture_output=True, text=True)
    versions = json.loads(out.stdout.strip().splitlines()[-1])
    if versions["fuxictr"] != FUXICTR_VERSION or not versions["torch"].startswith("2.13.0"):
        print(f"unexpected versions in {venv}: {versions}", file=sys.stderr)
        return 1
    if versions["cuda"]:
        print(f"warning: torch in {venv} is a CUDA build ({versions['torch']})", file=sys.stderr)
    marker.write_text(json.dumps({**wanted, "versions": versions,
                                  "setup_seconds": round(time.perf_counter() - t0, 1)}, indent=1))
    print(f"fuxictr venv ready in {time.perf_counter() - t0:.0f}s: {versions}", file=sys.stderr)
    print(py)
    return 0


# ------------------------------------------------------------------------------ measurements
def _rss_kib(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/status") as fh:
            for line in fh:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        pass
    return 0


def _descendants(root: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat") as fh:
                stat = fh.read()
            ppid = int(stat[stat.rindex(")") + 2:].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        children.setdefault(ppid, []).append(int(name))
    out, todo = [], [root]
    while todo:
        for c in children.get(todo.pop(), []):
            out.append(c)
            todo.append(c)
    return out


class TreeRssSampler(threading.Thread):
    """Peak of (RSS of this process + RSS of all its descendants), sampled from /proc."""

    def __init__(self, interval: float = 0.5):
        super().__init__(daemon=True)
        self.interval = interval
        self.peak_kib = 0
        self.peak_processes = 0
        self._stop_evt = threading.Event()
        self.enabled = os.path.isdir("/proc/self")

    def sample(self) -> None:
        me = os.getpid()
        pids = [me] + _descendants(me)
        total = sum(_rss_kib(p) for p in pids)
        if total > self.peak_kib:
            self.peak_kib, self.peak_processes = total, len(pids)

    def run(self) -> None:
        while self.enabled and not self._stop_evt.is_set():
            self.sample()
            self._stop_evt.wait(self.interval)

    def stop(self) -> None:
        self._stop_evt.set()
        if self.is_alive():
            self.join(timeout=5)


def _ru_maxrss_mib(who: int) -> float:
    return round(resource.getrusage(who).ru_maxrss / 1024.0, 1)   # Linux: KiB


# -------------------------------------------------------------------------------------- model
def _deepfm_class():
    """DeepFM on FuxiCTR's BaseModel (as model_zoo/DeepFM on GitHub), with timing hooks."""
    from fuxictr.pytorch.layers import FactorizationMachine, FeatureEmbedding, MLP_Block
    from fuxictr.pytorch.models import BaseModel

    class DeepFM(BaseModel):
        def __init__(self, feature_map, model_id="DeepFM", gpu=-1, learning_rate=1e-3,
                     embedding_dim=10, hidden_units=(64, 64, 64), hidden_activations="ReLU",
                     net_dropout=0.0, batch_norm=False, embedding_regularizer=None,
                     net_regularizer=None, **kwargs):
            super().__init__(feature_map, model_id=model_id, gpu=gpu,
                             embedding_regularizer=embedding_regularizer,
                             net_regularizer=net_regularizer, **kwargs)
            self.embedding_layer = FeatureEmbedding(feature_map, embedding_dim)
            # FM = LogisticRegression (1st order, with bias) + pairwise inner-product sum
            self.fm = FactorizationMachine(feature_map)
            self.mlp = MLP_Block(input_dim=feature_map.sum_emb_out_dim(), output_dim=1,
                                 hidden_units=list(hidden_units),
                                 hidden_activations=hidden_activations, output_activation=None,
                                 dropout_rates=net_dropout, batch_norm=batch_norm)
            self.compile(kwargs["optimizer"], kwargs["loss"], learning_rate)
            self.reset_parameters()
            self.model_to_device()
            # bench bookkeeping (not part of FuxiCTR's DeepFM)
            self.epoch_log: list[dict] = []
            self.capture_column = None          # feature to record while evaluating test
            self.captured: list = []
            self.last_eval = None               # (y_true, y_pred) of the latest evaluate()
            self._eval_seconds = 0.0
            self._loss_sum = 0.0
            self._loss_n = 0

        def forward(self, inputs):
            if self.capture_column is not None:
                self.captured.append(inputs[self.capture_column].cpu().numpy().copy())
            X = self.get_inputs(inputs)
            feature_emb = self.embedding_layer(X)
            logit = self.fm(X, feature_emb) + self.mlp(feature_emb.flatten(start_dim=1))
            return {"y_pred": self.output_activation(logit)}

        # -- hooks: same behaviour as BaseModel, plus timings / logs for the benchmark --
        def train_step(self, batch_data):
            loss = super().train_step(batch_data)
            self._loss_sum += float(loss.item())
            self._loss_n += 1
            return loss

        def train_epoch(self, data_generator):
            self._eval_seconds = 0.0
            self._loss_sum, self._loss_n = 0.0, 0
            rec = {"epoch": self._epoch_index + 1,
                   "lr": float(self.optimizer.param_groups[0]["lr"])}
            t0 = time.perf_counter()
            super().train_epoch(data_generator)
            wall = time.perf_counter() - t0
            rec.update({"wall_seconds": round(wall, 3),
                        "eval_seconds": round(self._eval_seconds, 3),
                        "train_seconds": round(wall - self._eval_seconds, 3),
                        "train_loss": self._loss_sum / max(self._loss_n, 1),
                        "batches": self._loss_n})
            rec.update(getattr(self, "_pending_valid", {}))
            self._pending_valid = {}
            self.epoch_log.append(rec)

        def eval_step(self):
            # BaseModel.eval_step evaluates only the monitored metrics; logloss is added here
            # (same pass, negligible cost) so the per-epoch log has both.
            t0 = time.perf_counter()
            metrics = list(dict.fromkeys(["logloss", "AUC"] + self._monitor.get_metrics()))
            val_logs = self.evaluate(self.valid_gen, metrics=metrics)
            self.checkpoint_and_earlystop(val_logs)
            self.train()
            self._eval_seconds += time.perf_counter() - t0
            self._pending_valid = {"valid_" + k: float(v) for k, v in val_logs.items()}
            self._pending_valid["improved"] = self._stopping_steps == 0

        def evaluate_metrics(self, y_true, y_pred, metrics, group_id=None):
            self.last_eval = (y_true, y_pred)
            return super().evaluate_metrics(y_true, y_pred, metrics, group_id)

    return DeepFM


# ---------------------------------------------------------------------------------------- run
def _feature_cols(min_count: int) -> list[dict]:
    # Same list and order as FuxiCTR's avazu_x4 dataset config. Order matters: FeatureProcessor
    # applies `preprocess` in reverse order, so weekday/weekend read the raw YYMMDDHH `hour`
    # before convert_hour overwrites it.
    return [
        {"name": "id", "active": False, "dtype": "str", "type": "categorical"},
        {"name": "hour", "active": True, "dtype": "str", "type": "categorical",
         "preprocess": "convert_hour"},
        {"name": list(RAW_CATEGORICAL), "active": True, "dtype": "str", "type": "categorical"},
        {"name": "weekday", "active": True, "dtype": "str", "type": "categorical",
         "preprocess": "convert_weekday"},
        {"name": "weekend", "active": True, "dtype": "str", "type": "categorical",
         "preprocess": "convert_weekend"},
    ]


def _parse_reg(text: str):
    try:
        return float(text)
    except ValueError:
        return text                     # e.g. "l2(1e-8)", FuxiCTR's own syntax


def _monitor(text: str):
    if text == "AUC":
        return "AUC", "max"
    if text == "logloss":
        return "logloss", "min"
    if text in ("AUC-logloss", "AUC_logloss"):    # BARS' usual {'AUC': 1, 'logloss': -1}
        return {"AUC": 1, "logloss": -1}, "max"
    raise SystemExit(f"--monitor must be AUC, logloss or AUC-logloss, not {text!r}")


def cmd_run(args: argparse.Namespace) -> int:
    t_start = time.perf_counter()
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    os.environ.setdefault("RAY_DATA_LOG_LEVEL", "WARNING")     # no per-dataset INFO lines
    here = str(Path(__file__).resolve().parent)
    sys.path[:] = [p for p in sys.path if not p or str(Path(p).resolve()) != here]  # no bench/ shadowing
    sampler = TreeRssSampler()
    sampler.start()

    import logging

    import fuxictr
    import numpy as np
    import polars as pl
    import pyarrow.parquet as pq
    import ray
    import torch
    from fuxictr.datasets.avazu import CustomizedFeatureProcessor
    from fuxictr.features import FeatureMap
    from fuxictr.preprocess import build_dataset
    from fuxictr.pytorch.dataloaders import RankDataLoader
    from fuxictr.pytorch.torch_utils import seed_everything
    from fuxictr.utils import set_logger
    t_imports = time.perf_counter() - t_start

    data = Path(args.data).resolve()
    work = Path(args.work).resolve()
    work.mkdir(parents=True, exist_ok=True)
    data_root = work / "data"
    model_root = work / "checkpoints"
    for stale in (data_root / DATASET_ID, model_root / DATASET_ID):
        shutil.rmtree(stale, ignore_errors=True)    # build_dataset skips if feature_map.json exists
    splits = {s: data / f"{s}.csv" for s in ("train", "valid", "test")}
    for p in splits.values():
        if not p.exists():
            raise SystemExit(f"missing {p}")

    hidden_units = [int(x) for x in str(args.hidden_units).split(",") if x.strip()]
    monitor, monitor_mode = _monitor(args.monitor)
    params = {
        "model": MODEL_ID, "model_id": MODEL_ID, "dataset_id": DATASET_ID,
        "data_root": str(data_root), "model_root": str(model_root),
        "data_format": "parquet", "task": "binary_classification",
        "loss": "binary_crossentropy", "metrics": ["logloss", "AUC"], "optimizer": "adam",
        "learning_rate": args.lr, "embedding_dim": args.embedding_dim,
        "hidden_units": hidden_units, "hidden_activations": "relu",
        "net_dropout": args.dropout, "batch_norm": bool(args.batch_norm),
        "embedding_regularizer": _parse_reg(args.embedding_regularizer),
        "net_regularizer": _parse_reg(args.net_regularizer),
        "batch_size": args.batch_size, "epochs": args.epochs, "shuffle": True,
        "seed": args.seed, "monitor": monitor, "monitor_mode": monitor_mode,
        "early_stop_patience": args.patience, "save_best_only": True,
        "reduce_lr_on_plateau": True, "eval_steps": None, "num_workers": args.num_workers,
        "verbose": args.verbose, "gpu": -1, "min_categr_count": args.min_count,
    }
    set_logger(params)                  # log + checkpoint dir: <work>/checkpoints/<dataset_id>/
    log = logging.getLogger("fuxictr_bench")   # propagates to the root handlers set_logger made
    log.info("bench params: %s", json.dumps(params, default=str))
    seed_everything(seed=args.seed)
    torch_threads = torch.get_num_threads()

    result: dict = {"tool": "fuxictr", "model": "DeepFM", "status": "failed",
                    "fuxictr_version": fuxictr.__version__, "torch_version": torch.__version__,
                    "polars_version": pl.__version__, "ray_version": ray.__version__,
                    "python": sys.version.split()[0], "torch_threads": torch_threads,
                    "device": "cpu", "data": str(data), "work": str(work),
                    "config": {k: params[k] for k in (
                        "embedding_dim", "hidden_units", "hidden_activations", "net_dropout",
                        "batch_norm", "learning_rate", "embedding_regularizer",
                        "net_regularizer", "batch_size", "epochs", "seed", "monitor",
                        "monitor_mode", "early_stop_patience", "min_categr_count",
                        "num_workers", "shuffle")} | {"ray_num_cpus": args.ray_num_cpus},
                    "import_seconds": round(t_imports, 3)}
    out_path = Path(args.out)
    try:
        # ---- Ray: started here, quietly, with a bounded CPU count, before FuxiCTR's own init
        t0 = time.perf_counter()
        ray_kwargs = {"num_cpus": args.ray_num_cpus, "include_dashboard": False,
                      "logging_level": logging.ERROR, "ignore_reinit_error": True,
                      "log_to_driver": bool(args.ray_log_to_driver),
                      # as fuxictr's own init_ray: the workers must import fuxictr
                      "runtime_env": {"env_vars": {"PYTHONPATH": str(
                          Path(fuxictr.__file__).resolve().parents[1])}}}
        if args.ray_object_store_mib:
            ray_kwargs["object_store_memory"] = int(args.ray_object_store_mib) * 1024 * 1024
        ray.init(**ray_kwargs)
        ctx = ray.data.DataContext.get_current()
        ctx.enable_progress_bars = False
        if hasattr(ctx, "print_on_execution_start"):
            ctx.print_on_execution_start = False
        result["ray_init_seconds"] = round(time.perf_counter() - t0, 3)

        # ---- preprocessing: FuxiCTR's FeatureProcessor + build_dataset (csv -> parquet)
        bd_module = sys.modules["fuxictr.preprocess.build_dataset"]
        orig_transform = bd_module.transform
        transform_seconds = {}

        def timed_transform(feature_encoder, ddf, split="train", block_size=0):
            t = time.perf_counter()
            orig_transform(feature_encoder, ddf, split=split, block_size=block_size)
            transform_seconds[split] = round(time.perf_counter() - t, 3)

        bd_module.transform = timed_transform
        t0 = time.perf_counter()
        processor = CustomizedFeatureProcessor(feature_cols=_feature_cols(args.min_count),
                                               label_col={"name": "click", "dtype": "float"},
                                               dataset_id=DATASET_ID, data_root=str(data_root))
        train_data, valid_data, test_data = build_dataset(
            processor, train_data=str(splits["train"]), valid_data=str(splits["valid"]),
            test_data=str(splits["test"]), data_format="csv",
            min_categr_count=args.min_count)
        pre = time.perf_counter() - t0
        bd_module.transform = orig_transform
        result["preprocess_seconds"] = round(pre, 3)
        result["preprocess_transform_seconds"] = transform_seconds
        result["preprocess_fit_seconds"] = round(pre - sum(transform_seconds.values()), 3)
        result["data_files"] = {"train": train_data, "valid": valid_data, "test": test_data}

        feature_map = FeatureMap(DATASET_ID, str(data_root / DATASET_ID))
        feature_map.load(str(data_root / DATASET_ID / "feature_map.json"), params)
        result["features"] = list(feature_map.features.keys())
        result["num_fields"] = feature_map.num_fields
        result["vocab_sizes"] = {k: v["vocab_size"] for k, v in feature_map.features.items()}
        result["total_features"] = feature_map.total_features

        # ---- model
        DeepFM = _deepfm_class()
        model = DeepFM(feature_map, **params)
        model.count_parameters()
        result["num_parameters"] = int(sum(p.numel() for p in model.parameters()
                                           if p.requires_grad))

        # ---- loaders (Ray Data over parquet) and training
        t0 = time.perf_counter()
        train_gen, valid_gen = RankDataLoader(
            feature_map, stage="train", train_data=train_data, valid_data=valid_data,
            batch_size=args.batch_size, shuffle=True, data_format="parquet",
            num_workers=args.num_workers)
        result["loader_setup_seconds"] = round(time.perf_counter() - t0, 3)
        result["train_rows"] = int(train_gen.num_samples)
        result["valid_rows"] = int(valid_gen.num_samples)

        t0 = time.perf_counter()
        model.fit(train_gen, validation_data=valid_gen, epochs=args.epochs,
                  max_gradient_norm=10.0)
        result["fit_wall_seconds"] = round(time.perf_counter() - t0, 3)
        epochs = model.epoch_log
        train_seconds = sum(e["train_seconds"] for e in epochs)
        result["epochs"] = epochs
        result["epochs_run"] = len(epochs)
        result["epoch_timing_includes_eval"] = False
        result["train_seconds_total"] = round(train_seconds, 3)
        result["valid_seconds_total"] = round(sum(e["eval_seconds"] for e in epochs), 3)
        result["train_samples_per_second"] = (
            round(result["train_rows"] * len(epochs) / train_seconds, 1) if train_seconds else None)
        result["valid_auc"] = [e.get("valid_AUC") for e in epochs]
        result["valid_logloss"] = [e.get("valid_logloss") for e in epochs]
        # the checkpoint fit() reloads is the last epoch that improved the monitor (by > 1e-6)
        improved = [e["epoch"] for e in epochs if e.get("improved")]
        result["best_epoch"] = improved[-1] if improved else None
        result["early_stopped"] = bool(model._stop_training)
        del train_gen, valid_gen

        # ---- test: best checkpoint (reloaded by fit), order-preserving Ray read
        ctx.execution_options.preserve_order = True
        t0 = time.perf_counter()
        test_gen = RankDataLoader(feature_map, stage="test", test_data=test_data,
                                  batch_size=args.batch_size, shuffle=False,
                                  data_format="parquet", num_workers=args.num_workers)
        model.capture_column = ORDER_CHECK_COLUMN
        test_logs = model.evaluate(test_gen)
        model.capture_column = None
        result["test_eval_seconds"] = round(time.perf_counter() - t0, 3)
        y_true, y_pred = model.last_eval
        result["test_rows"] = len(y_pred)
        result["auc"] = float(test_logs["AUC"])
        result["logloss"] = float(test_logs["logloss"])

        # order check: loader batches vs test.parquet (written sorted by CSV row) vs the CSV
        table = pq.read_table(test_data, columns=[ORDER_CHECK_COLUMN, "click"])
        captured = np.concatenate(model.captured) if model.captured else np.empty(0)
        csv_click = (pl.read_csv(splits["test"], columns=["click"])["click"]
                     .to_numpy().astype(np.float64))
        same_rows = (len(captured) == table.num_rows == len(y_true) == len(csv_click))
        checks = {
            "loader_vs_parquet_feature": bool(same_rows and np.array_equal(
                captured.astype(np.int64),
                table.column(ORDER_CHECK_COLUMN).to_numpy().astype(np.int64))),
            "loader_vs_parquet_label": bool(same_rows and np.array_equal(
                y_true, table.column("click").to_numpy().astype(np.float64))),
            "loader_vs_csv_label": bool(same_rows and np.array_equal(y_true, csv_click)),
        }
        result["pred_order_checks"] = checks
        result["pred_order"] = "csv" if all(checks.values()) else "loader"
        np.save(work / "test_pred.npy", np.asarray(y_pred, dtype=np.float32))
        np.save(work / "test_label.npy", np.asarray(y_true, dtype=np.float32))
        result["test_pred_path"] = str(work / "test_pred.npy")
        result["test_label_path"] = str(work / "test_label.npy")
        result["checkpoint"] = model.checkpoint
        result["log_file"] = str(model_root / DATASET_ID / f"{MODEL_ID}.log")
        result["status"] = "ok"
    except BaseException as exc:       # still write what we have, then re-raise
        result["error"] = f"{type(exc).__name__}: {exc}"
        raise
    finally:
        try:
            if ray.is_initialized():
                ray.shutdown()
        finally:
            sampler.sample()
            sampler.stop()
            result["peak_rss_mib"] = _ru_maxrss_mib(resource.RUSAGE_SELF)
            result["peak_rss_children_mib"] = _ru_maxrss_mib(resource.RUSAGE_CHILDREN)
            if sampler.enabled:
                result["peak_tree_rss_sampled_mib"] = round(sampler.peak_kib / 1024.0, 1)
                result["peak_tree_processes"] = sampler.peak_processes
            result["total_seconds"] = round(time.perf_counter() - t_start, 3)
            out_path.parent.mkdir(parents=True, exist_ok=True)
            out_path.write_text(json.dumps(result, indent=2, default=str) + "\n")
            log.info("result written to %s", out_path)
    return 0


# --------------------------------------------------------------------------------------- main
def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    sub = ap.add_subparsers(dest="cmd", required=True)

    s = sub.add_parser("setup", help="create the FuxiCTR venv (run with the project's python)")
    s.add_argument("--venv", default="bench/out/fuxictr-venv")
    s.add_argument("--force", action="store_true", help="reinstall even if the marker is there")
    s.set_defaults(fn=cmd_setup)

    r = sub.add_parser("run", help="preprocess + train + test DeepFM (run with the venv's python)")
    r.add_argument("--data", required=True, help="dir with train.csv, valid.csv, test.csv")
    r.add_argument("--work", required=True, help="FuxiCTR working dir (data, checkpoints, logs)")
    r.add_argument("--out", required=True, help="result JSON")
    r.add_argument("--epochs", type=int, default=4)
    r.add_argument("--batch-size", type=int, default=4096)
    r.add_argument("--embedding-dim", type=int, default=16)
    r.add_argument("--hidden-units", default="400,400,400")
    r.add_argument("--dropout", type=float, default=0.1)
    r.add_argument("--batch-norm", type=int, default=0)
    r.add_argument("--lr", type=float, default=1e-3)
    r.add_argument("--embedding-regularizer", default="0")
    r.add_argument("--net-regularizer", default="0")
    r.add_argument("--min-count", type=int, default=2)
    r.add_argument("--seed", type=int, default=2024)
    r.add_argument("--patience", type=int, default=2)
    r.add_argument("--num-workers", type=int, default=2,
                   help="FuxiCTR's num_workers = Ray Data prefetch_batches")
    r.add_argument("--monitor", default="AUC", help="AUC | logloss | AUC-logloss")
    r.add_argument("--ray-num-cpus", type=int, default=2)
    r.add_argument("--ray-object-store-mib", type=int, default=0, help="0 = Ray's default")
    r.add_argument("--ray-log-to-driver", type=int, default=0)
    r.add_argument("--verbose", type=int, default=1, help="FuxiCTR verbose (1 = tqdm bars)")
    r.set_defaults(fn=cmd_run)

    args = ap.parse_args(argv)
    return args.fn(args)


if __name__ == "__main__":
    sys.exit(main())
