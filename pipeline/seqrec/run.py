"""Glue between the RecBole atomic sets written by the ETL, the models and the one training loop."""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import torch

from pipeline.core.errors import ConfigError, DataError
from pipeline.core.train import run_key  # noqa: F401  (the stages call rn.run_key)
from pipeline.core.train import LoopConfig, Trainer
from pipeline.seqrec import formats as fm
from pipeline.seqrec.etl import tokenize_items
from pipeline.seqrec.model import SASRec, build_model, parameter_counts
from pipeline.seqrec.synthetic import Oracle
from pipeline.seqrec.train import OneCycleAdam, SeqRecTask, eval_split, pack_sequences

log = logging.getLogger(__name__)


@dataclass
class SeqDataset:
    name: str
    users: list[str]
    seqs: list[np.ndarray]             # item indices 1..N, chronological
    items: list[str]                   # items[i - 1] = raw id of index i
    meta: dict[str, fm.ItemMeta] | None

    @property
    def num_items(self) -> int:
        return len(self.items)

    @property
    def interactions(self) -> int:
        return int(sum(len(s) for s in self.seqs))

    def train_popularity(self) -> np.ndarray:
        """Counts of every index in the training part (items[:-2]) of the sequences; [N + 1]."""
        c = np.zeros(self.num_items + 1, dtype=np.int64)
        for s in self.seqs:
            np.add.at(c, s[:-2], 1)
        return c


def load_recbole_dataset(folder: Path) -> SeqDataset:
    """``folder/<name>.inter`` (+ ``.item``): rows must be chronological per user (the ETL writes them so);
    they are re-sorted by timestamp (stable) anyway, so a user's own RecBole files work too."""
    folder = Path(folder)
    name = folder.name
    inter = folder / f"{name}.inter"
    by_user: dict[str, list] = {}
    for n, row in enumerate(fm.read_recbole(inter, required=("user_id", "item_id"))):
        by_user.setdefault(row["user_id"], []).append((row.get("timestamp", 0.0), n, row["item_id"]))
    if not by_user:
        raise DataError(inter, "no interactions", expected="a RecBole .inter file with rows")
    item_file = folder / f"{name}.item"
    meta = fm.read_recbole_item(item_file) if item_file.is_file() else None
    # the catalogue: items with interactions plus the .item file's items (candidates in evaluation)
    items = sorted({i for ev in by_user.values() for _, _, i in ev} | set(meta or ()))
    index = {a: k + 1 for k, a in enumerate(items)}
    users = sorted(by_user)
    seqs = [np.asarray([index[i] for _, _, i in sorted(by_user[u])], dtype=np.int64) for u in users]
    return SeqDataset(name, users, seqs, items, meta)


def item_tokens(ds: SeqDataset, tokenizer, max_title: int, max_brand: int) -> tuple[torch.Tensor, torch.Tensor, dict]:
    """Title/brand token matrices of the catalogue (row 0 = padding item) with the given tokenizer."""
    if ds.meta is None:
        raise ConfigError(f"item_repr: the dataset {ds.name} has no item text (.item file); use item_repr: id")
    titles = [ds.meta[i].title if i in ds.meta else "" for i in ds.items]
    brands = [ds.meta[i].brand if i in ds.meta else "" for i in ds.items]
    t, b, stats = tokenize_items(tokenizer, titles, brands, max_title, max_brand)
    pad = np.zeros((1, t.shape[1]), np.int32), np.zeros((1, b.shape[1]), np.int32)
    return (torch.from_numpy(np.vstack([pad[0], t])), torch.from_numpy(np.vstack([pad[1], b])), stats)


def load_oracle(oracle_dir: Path, ds: SeqDataset) -> Oracle | None:
    """The synthetic world's planted distribution mapped onto this dataset's indices (None on real data)."""
    items_f, users_f, world_f = (oracle_dir / "items.parquet", oracle_dir / "users.parquet", oracle_dir / "world.json")
    if not (items_f.is_file() and users_f.is_file() and world_f.is_file()):
        return None
    it = pq.read_table(items_f).to_pydict()
    pos = {a: k for k, a in enumerate(it["asin"])}
    idx = np.asarray([pos.get(a, -1) for a in ds.items])
    if (idx < 0).any():
        return None
    cluster = np.concatenate([[0], np.asarray(it["cluster"])[idx]])
    p_within = np.concatenate([[0.0], np.asarray(it["p_within"], dtype=np.float64)[idx]])
    ut = pq.read_table(users_f).to_pydict()
    upos = {u: k for k, u in enumerate(ut["user"])}
    if any(u not in upos for u in ds.users):
        return None
    pi = np.asarray([ut["pi"][upos[u]] for u in ds.users], dtype=np.float64)
    stay = json.loads(world_f.read_text())["stay"]
    return Oracle(cluster, p_within, pi, stay)


@dataclass
class RunConfig:
    item_repr: str
    layers: int
    dim: int
    heads: int
    ffn_mult: int
    dropout: float
    max_len: int
    loss: str
    num_negatives: int
    neg_alpha: float
    logq: bool
    epochs: int
    batch_size: int
    lr: float
    weight_decay: float
    clip_norm: float
    warmup: float
    div_factor: float
    final_div_factor: float
    patience: int
    protocol: str              # full_ranking | sampled_<K>
    eval_negatives: int
    eval_users: int
    mask_history: bool
    monitor: str
    seed: int


def make_model(cfg: RunConfig, ds: SeqDataset, tokens: tuple | None, vocab_size: int) -> SASRec:
    kw = dict(dim=cfg.dim, layers=cfg.layers, heads=cfg.heads, ffn_mult=cfg.ffn_mult, max_len=cfg.max_len,
              dropout=cfg.dropout)
    if cfg.item_repr == "text":
        return build_model("text", vocab_size=vocab_size, title_tokens=tokens[0], brand_tokens=tokens[1], **kw)
    return build_model("id", num_items=ds.num_items, **kw)


def train_and_evaluate(cfg: RunConfig, ds: SeqDataset, model: SASRec, *, checkpoint_dir: Path,
                       tb_dir: Path | None, oracle: Oracle | None, max_steps: int = 0) -> dict:
    """Fit with the one loop (early stopping on valid ``cfg.monitor``, best reload, resume), then evaluate
    train/valid/test (with the oracle beside the model on synthetic data)."""
    train = pack_sequences([s[:-2] for s in ds.seqs], cfg.max_len)
    if len(train) == 0:
        raise DataError(ds.name, "no user has 4 or more interactions", expected="leave-one-out needs >= 4")
    splits = {sp: eval_split(ds.seqs, sp, cfg.max_len, limit=cfg.eval_users, seed=cfg.seed)
              for sp in ("train", "valid", "test")}
    task = SeqRecTask(loss=cfg.loss, num_items=ds.num_items, num_negatives=cfg.num_negatives,
                      popularity=ds.train_popularity(), neg_alpha=cfg.neg_alpha, logq=cfg.logq,
                      protocol=cfg.protocol, eval_negatives=cfg.eval_negatives, mask_history=cfg.mask_history,
                      monitor=cfg.monitor, oracle=oracle, seed=cfg.seed)
    steps = cfg.epochs * train.steps_per_epoch(cfg.batch_size)
    rule = OneCycleAdam(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay, clip_norm=cfg.clip_norm,
                        total_steps=steps, warmup=cfg.warmup, div_factor=cfg.div_factor,
                        final_div_factor=cfg.final_div_factor)
    loop = LoopConfig(epochs=cfg.epochs, batch_size=cfg.batch_size, patience=cfg.patience, lr_decay=1.0,
                      min_lr=0.0, checkpoint_every_steps=50, seed=cfg.seed, max_steps=max_steps)
    trainer = Trainer(model, rule, loop, embedding_params=model.embedding_parameters(), checkpoint_dir=checkpoint_dir,
                      tb_dir=tb_dir, task=task)
    state = trainer.fit(train, splits["valid"])
    metrics = {sp: task.evaluate_model(model, d, with_oracle=True) for sp, d in splits.items()}
    return {"metrics": metrics, "history": state.history, "best_epoch": state.best_epoch,
            "epochs_run": len(state.history), "steps": state.global_step, "train_rows": len(train),
            **parameter_counts(model)}


def load_pretrained(model: SASRec, path: Path) -> dict:
    """Load a pretrained state_dict (weights only; the catalogue buffers are not in it)."""
    state = torch.load(path, weights_only=True, map_location="cpu")
    missing, unexpected = model.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise ConfigError(f"finetune.init_size: the pretrained checkpoint {path} does not fit this model "
                          f"(missing {missing[:3]}, unexpected {unexpected[:3]})")
    return {"loaded_tensors": len(state)}
