"""The one training loop, shared by every branch (FuxiCTR's semantics for early stopping and lr decay).

What it does:

* loss = the task's loss of a batch + ``embedding_regularizer``/2 · Σ‖E‖² over whole embedding tables
  + ``net_regularizer``/2 · Σ‖W‖² over every other parameter;
* one optimizer step per batch through a step rule (``rule.step(x, closure)``; the shared ones are in
  :mod:`pipeline.core.optim`, a branch may add its own);
* evaluation every epoch or every ``eval_every_steps`` (and after the last step, so no step is wasted);
  the monitored figure is the task's ``monitor`` key;
* on an improving evaluation the best checkpoint is saved; on every non-improving one the learning rates are
  multiplied by ``lr_decay`` (floor ``min_lr``) and after ``patience`` of them in a row training stops;
  the best checkpoint is reloaded before the final evaluation;
* resume: ``last.pt`` holds model, step rule (optimizer) state, trainer counters, history and RNG states,
  written atomically every ``checkpoint_every_steps`` and at every evaluation; a restarted run continues
  from it and ends with the same metrics as an uninterrupted one (the batch order is a function of
  (seed, epoch), so the interrupted epoch is resumed at its step);
* TensorBoard scalars, a tqdm bar, and torchrun/DDP: every rank trains on its shard, evaluation is
  sharded and gathered, rank 0 alone writes files.

What is trained for is a :class:`Task` (required): the loss of one batch and the evaluation of a split,
with the name of the metric to monitor. Each branch passes its own (pointwise CTR, retrieval, ranking,
sequential recommendation), so they all share this loop (early stopping, lr reduction, resume, best
reload, TensorBoard, DDP) instead of writing another. A step
rule that needs a per-step learning-rate schedule (e.g. one-cycle) applies it inside ``rule.step`` and
keeps its state in ``rule.state_dict()``, so resume covers it; set ``lr_decay: 1.0`` to switch the
plateau reduction off.

Checkpoints are plain state_dicts loaded with ``torch.load(weights_only=True)``; an empty, truncated or
refused one is a DataError naming the file and how to start afresh (delete the folder or
``recdag clean-checkpoints``). A run holds an exclusive lock on its checkpoint folder
(``<folder>/.lock``, with its pid): a second concurrent run of the same stage and params fails at once
with one line instead of racing the first one's files.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import logging
import math
import os
import shutil
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import torch
import torch.distributed as dist
from torch import nn
from tqdm import tqdm

from pipeline.core.errors import DataError
from pipeline.core.io import load_weights


log = logging.getLogger(__name__)


@dataclass
class LoopConfig:
    epochs: int
    batch_size: int                  # global batch (split across DDP ranks)
    eval_every_steps: int = 0        # 0: evaluate once per epoch
    patience: int = 2
    lr_decay: float = 0.1
    min_lr: float = 1e-6
    embedding_regularizer: float = 0.0
    net_regularizer: float = 0.0
    checkpoint_every_steps: int = 0  # 0: only at evaluations
    eval_batch_size: int = 8192
    seed: int = 0
    max_steps: int = 0               # stop (as if killed) after this many steps in this process; tests only


@dataclass
class LoopState:
    epoch: int = 0
    step_in_epoch: int = 0
    global_step: int = 0
    best: float = -math.inf
    best_step: int = 0
    best_epoch: int = 0
    bad_evals: int = 0
    stopped: bool = False
    finished: bool = False
    running_loss: float = 0.0        # sum of batch losses x rows in the current epoch (kept across resume)
    running_rows: int = 0
    history: list = field(default_factory=list)

    def as_dict(self) -> dict:
        return dict(self.__dict__)


def dist_info() -> tuple[int, int]:
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def mean_over_ranks(total: float, count: int) -> float:
    """``sum(total) / sum(count)`` over every rank of the process group (the plain ratio without one): the
    training loss of a torchrun run is the mean over every rank's rows, not rank 0's own."""
    if dist_info()[1] == 1:
        return total / max(count, 1)
    device = torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else None
    t = torch.tensor([total, float(count)], dtype=torch.float64, device=device)
    dist.all_reduce(t)
    return float(t[0]) / max(float(t[1]), 1.0)


def init_distributed() -> tuple[int, int]:
    """Join the torchrun process group when launched by torchrun (WORLD_SIZE > 1)."""
    if int(os.environ.get("WORLD_SIZE", "1")) > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
    return dist_info()


class Task:
    """What the loop optimises and how it evaluates. Subclass for a branch; every method gets the model
    the loop trains (``model`` may be the DDP wrapper; ``trainer.raw_model`` is the bare module).

    ``monitor`` names the key of :meth:`evaluate`'s dict that early stopping and lr reduction follow
    (higher is better). Every numeric value of that dict is logged and kept in the history as ``valid_<k>``.
    """

    monitor: str

    def loss(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def evaluate(self, trainer: "Trainer", data) -> dict:
        raise NotImplementedError


def run_key(*parts) -> str:
    """A short stable hash of everything a run depends on: resume checkpoint folders are keyed by it, so a
    run never resumes from a checkpoint written under other params or data."""
    blob = json.dumps(parts, sort_keys=True, default=lambda o: getattr(o, "__dict__", str(o)))
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


@contextmanager
def resumable(root: Path, name: str, *key_parts) -> Iterator[Path]:
    """The run-key / checkpoint-folder / clean-up pattern of every training stage: yields
    ``root/<name>-<run_key(key_parts)>`` for the Trainer's checkpoints; removed when the block finishes
    (after the stage wrote its outputs), kept when it raises or the process is killed, so a re-run with the
    same params and data resumes from it."""
    d = Path(root) / f"{name}-{run_key(*key_parts)}"
    if dist_info()[0] != 0:
        yield d
        return
    with checkpoint_lock(d):
        yield d
        shutil.rmtree(d, ignore_errors=True)


def fresh_start_advice(folder: Path) -> str:
    return (f"a resume checkpoint written by this stage; delete {folder} (or run `recdag clean-checkpoints`) "
            "to start this run afresh")


@contextmanager
def checkpoint_lock(folder: Path) -> Iterator[None]:
    """Hold an exclusive, non-blocking flock on ``folder/.lock`` (created with the folder) for the block;
    a second holder gets a DataError naming the folder and the pid of the run that holds it. The lock
    dies with its process, so a killed run never leaves it held."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / ".lock"
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "?"
            raise DataError(folder, f"checkpoint folder is in use by another run of this stage (pid {holder})",
                            expected="one run per stage and params at a time: wait for it to finish or stop "
                                     "it") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, str(os.getpid()).encode(), 0)
        yield
    finally:
        try:
            if folder.is_dir() and [p.name for p in folder.iterdir()] == [".lock"]:
                shutil.rmtree(folder, ignore_errors=True)    # a run that failed before its first checkpoint
        finally:
            os.close(fd)                                     # closing releases the flock


def _atomic_save(obj, path: Path) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    torch.save(obj, tmp)
    os.replace(tmp, path)


class Trainer:
    """Trains ``model`` with a step rule; ``embedding_params`` are regularised by embedding_regularizer."""

    def __init__(self, model: nn.Module, rule, config: LoopConfig, *, embedding_params: list[torch.Tensor],
                 checkpoint_dir: Path, task: Task, tb_dir: Path | None = None):
        self.rank, self.world = dist_info()
        self.raw_model = model
        self.model = (nn.parallel.DistributedDataParallel(model) if self.world > 1 else model)
        self.rule = rule
        self.cfg = config
        self.ckpt_dir = Path(checkpoint_dir)
        self.tb_dir = tb_dir
        self.task = task
        emb_ids = {id(p) for p in embedding_params}
        self.embedding_params = list(embedding_params)
        self.net_params = [p for p in model.parameters() if id(p) not in emb_ids]
        self.state = LoopState()
        self._tb = None
        if self.rank == 0:
            self.ckpt_dir.mkdir(parents=True, exist_ok=True)

    # ------------------------------------------------------------------ checkpoints
    @property
    def last_path(self) -> Path:
        return self.ckpt_dir / "last.pt"

    @property
    def best_path(self) -> Path:
        return self.ckpt_dir / "best.pt"

    def _save_last(self) -> None:
        if self.rank != 0:
            return
        _atomic_save({"model": self.raw_model.state_dict(), "rule": self.rule.state_dict(),
                      "state": self.state.as_dict(), "rng": torch.get_rng_state()}, self.last_path)

    def try_resume(self) -> bool:
        if not self.last_path.is_file():
            return False
        advice = fresh_start_advice(self.ckpt_dir)
        ckpt = load_weights(self.last_path, kind="checkpoint", expected=advice)
        try:
            self.raw_model.load_state_dict(ckpt["model"])
            self.rule.load_state_dict(ckpt["rule"])
            self.state = LoopState(**ckpt["state"])
            torch.set_rng_state(ckpt["rng"])
        except (KeyError, TypeError, ValueError, RuntimeError) as e:
            reason = (str(e).splitlines() or [type(e).__name__])[0][:160]
            raise DataError(self.last_path, f"checkpoint does not fit this run ({reason})",
                            expected=advice) from None
        log.info("resumed from %s at epoch %d step %d", self.last_path, self.state.epoch, self.state.step_in_epoch)
        return True

    # ------------------------------------------------------------------ loss, eval
    def _regularizer(self) -> torch.Tensor:
        reg = torch.zeros(())
        if self.cfg.embedding_regularizer:
            reg = reg + self.cfg.embedding_regularizer / 2 * sum((p * p).sum() for p in self.embedding_params)
        if self.cfg.net_regularizer:
            reg = reg + self.cfg.net_regularizer / 2 * sum((p * p).sum() for p in self.net_params)
        return reg

    def evaluate(self, data) -> dict:
        """The task's metrics on ``data`` (model in eval mode; back to train mode afterwards)."""
        was_training = self.model.training
        self.model.eval()
        try:
            with torch.no_grad():
                return self.task.evaluate(self, data)
        finally:
            self.model.train(was_training)

    def _monitor(self, m: dict) -> float:
        return float(m[self.task.monitor])

    def _lrs(self) -> list[float]:
        return [g["lr"] for g in self.rule.optimizer.param_groups]

    # ------------------------------------------------------------------ loop
    def _log_scalar(self, tag: str, value: float, step: int) -> None:
        if self.rank != 0 or self.tb_dir is None:
            return
        if self._tb is None:
            from torch.utils.tensorboard import SummaryWriter
            self._tb = SummaryWriter(str(self.tb_dir))
        self._tb.add_scalar(tag, value, step)

    def _on_eval(self, valid, train_loss: float) -> None:
        s = self.state
        m = self.evaluate(valid)
        score = self._monitor(m)
        improved = score > s.best + 1e-9
        record = {"epoch": s.epoch, "step": s.global_step, "train_loss": train_loss,
                  **{f"valid_{k}": float(v) for k, v in m.items() if isinstance(v, (int, float))},
                  "monitor": score, "lr": self._lrs()[0], "improved": improved}
        s.history.append(record)
        for k, v in record.items():
            if k.startswith("valid_") or k in ("train_loss", "lr"):
                self._log_scalar(k.replace("_", "/", 1), v, s.global_step)
        if improved:
            s.best, s.best_step, s.best_epoch, s.bad_evals = score, s.global_step, s.epoch, 0
            if self.rank == 0:
                _atomic_save(self.raw_model.state_dict(), self.best_path)
        else:
            s.bad_evals += 1
            for g in self.rule.optimizer.param_groups:
                g["lr"] = max(g["lr"] * self.cfg.lr_decay, self.cfg.min_lr)
            if s.bad_evals >= self.cfg.patience:
                s.stopped = True
        shown = " ".join(f"{k} {v:.5f}" for k, v in m.items() if isinstance(v, float))
        log.info("eval epoch %d step %d: %s %s", s.epoch, s.global_step, shown,
                 "(best)" if improved else f"(no improvement {s.bad_evals}/{self.cfg.patience})")
        self._save_last()

    def fit(self, train, valid, *, resume: bool = True) -> LoopState:
        if resume:
            self.try_resume()
        cfg, s = self.cfg, self.state
        per_rank_bs = max(1, cfg.batch_size // self.world)
        steps = train.steps_per_epoch(per_rank_bs, self.world)
        self.model.train()
        done_here = 0
        while not s.stopped and not s.finished and s.epoch < cfg.epochs:
            bar = tqdm(total=steps, initial=s.step_in_epoch, desc=f"epoch {s.epoch + 1}/{cfg.epochs}",
                       disable=None if self.rank == 0 else True, leave=False)
            for x, y, _ in train.batches(per_rank_bs, seed=cfg.seed, epoch=s.epoch, rank=self.rank,
                                         world=self.world, start_step=s.step_in_epoch):
                def closure(x=x, y=y):
                    loss = self.task.loss(self.model, x, y) + self._regularizer()
                    loss.backward()
                    return loss.detach()

                loss = float(self.rule.step(x, closure))
                s.running_loss += loss * len(y)
                s.running_rows += len(y)
                s.step_in_epoch += 1
                s.global_step += 1
                done_here += 1
                bar.update(1)
                if s.global_step % 50 == 0:
                    self._log_scalar("train/loss", loss, s.global_step)
                if cfg.eval_every_steps and s.global_step % cfg.eval_every_steps == 0:
                    self._on_eval(valid, mean_over_ranks(s.running_loss, s.running_rows))
                    if s.stopped:
                        break
                elif cfg.checkpoint_every_steps and s.global_step % cfg.checkpoint_every_steps == 0:
                    self._save_last()
                if cfg.max_steps and done_here >= cfg.max_steps:
                    bar.close()
                    return s                            # simulated kill: last.pt is what survives
            bar.close()
            if s.stopped:
                break
            epoch_loss = mean_over_ranks(s.running_loss, s.running_rows)     # every rank's rows
            s.epoch += 1
            s.step_in_epoch, s.running_loss, s.running_rows = 0, 0.0, 0
            if not cfg.eval_every_steps or (s.epoch == cfg.epochs and s.global_step % cfg.eval_every_steps):
                self._on_eval(valid, epoch_loss)     # every epoch; with eval_every_steps, the last steps too
        s.finished = True
        if self.best_path.is_file():
            if self.world > 1:
                dist.barrier()
            best = load_weights(self.best_path, kind="checkpoint", expected=fresh_start_advice(self.ckpt_dir))
            self.raw_model.load_state_dict(best)
        self._save_last()
        if self._tb is not None:
            self._tb.close()
        return s
