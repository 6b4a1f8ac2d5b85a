"""Glue between the RecBole atomic sets written by the ETL, the models and the one training loop: the run
config from params (:func:`run_config`), the model with its item text and pretrained init (:func:`init_model`),
fit + evaluation (:func:`train_and_evaluate`) and the reports of the pretrain / finetune stages.

Seed: Zivic et al., "Scaling Sequential Recommendation Models with Transformers", SIGIR 2024, on top of
SASRec, Kang & McAuley 2018. Pretraining uses the sampled InfoNCE loss and the ``sampled_<K>`` protocol
monitored on NDCG@5; fine-tuning uses full ranking (RecBole's full sort) monitored on NDCG@10, with
pretrain's architecture. Two recipes (:mod:`pipeline.seqrec.recipe`): ``recdag`` (pre-LN, shared negatives,
clipping, recdag's one-cycle; fine-tuning every weight with ``finetune.loss``, best epoch kept) and ``srt``
(the release: post-LN, per-row popularity+1 negatives, torch OneCycleLR, no clipping; fine-tuning with
InfoNCE, from pretrained through progressive unfreezing + EWC, each phase keeping its last epoch).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from pipeline.core.errors import ConfigError, DataError
from pipeline.core.dist import rank_world
from pipeline.core.io import load_weights, md5_file, read_json, read_table, write_json
from pipeline.core.optim import OneCycleAdam
from pipeline.core.seeding import derive_seed, seed_everything
from pipeline.core.seeding import rng
from pipeline.core.train import LoopConfig, Trainer, resumable
from pipeline.seqrec import formats as fm
from pipeline.seqrec.etl import load_tokenizer, tokenize_items
from pipeline.seqrec.model import SASRec, build_model, parameter_counts
from pipeline.seqrec.params import FinetuneParams, PretrainParams, pretrain_size
from pipeline.seqrec.recipe import EWCPenalty, Phase, SrtOneCycleAdam, progressive_phases, set_trainable
from pipeline.seqrec.synthetic import Oracle
from pipeline.seqrec.train import SeqRecTask, eval_split, pack_sequences

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

    def train_popularity(self, users: np.ndarray | None = None) -> np.ndarray:
        """Counts of every index in the training part (items[:-2]) of the sequences (of ``users`` only if
        given); [N + 1]."""
        c = np.zeros(self.num_items + 1, dtype=np.int64)
        for k in (range(len(self.seqs)) if users is None else users):
            np.add.at(c, self.seqs[k][:-2], 1)
        return c

    def training_users(self, frac: float, seed: int) -> np.ndarray:
        """The users whose training part is trained on: all, or a seeded ``frac`` of them (at least one).
        The draw is one seeded permutation cut at the fraction, so smaller fractions are nested in larger
        ones; valid and test keep every user."""
        n = len(self.seqs)
        if frac >= 1.0:
            return np.arange(n)
        k = max(1, int(round(frac * n)))
        return np.sort(rng(seed, "amazon", "finetune-users").permutation(n)[:k])


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
    if not any(titles) and not any(brands):
        raise ConfigError(f"item_repr: no item of the dataset {ds.name} has a title or brand, so a text item "
                          "representation would see only padding; use item_repr: id with finetune.from: scratch")
    t, b, stats = tokenize_items(tokenizer, titles, brands, max_title, max_brand)
    pad = np.zeros((1, t.shape[1]), np.int32), np.zeros((1, b.shape[1]), np.int32)
    return (torch.from_numpy(np.vstack([pad[0], t])), torch.from_numpy(np.vstack([pad[1], b])), stats)


def load_oracle(oracle_dir: Path, ds: SeqDataset) -> Oracle | None:
    """The synthetic world's planted distribution mapped onto this dataset's indices (None on real data)."""
    items_f, users_f, world_f = (oracle_dir / "items.parquet", oracle_dir / "users.parquet", oracle_dir / "world.json")
    if not (items_f.is_file() and users_f.is_file() and world_f.is_file()):
        return None
    it = read_table(items_f).to_pydict()
    pos = {a: k for k, a in enumerate(it["asin"])}
    idx = np.asarray([pos.get(a, -1) for a in ds.items])
    if (idx < 0).any():
        return None
    cluster = np.concatenate([[0], np.asarray(it["cluster"])[idx]])
    p_within = np.concatenate([[0.0], np.asarray(it["p_within"], dtype=np.float64)[idx]])
    ut = read_table(users_f).to_pydict()
    upos = {u: k for k, u in enumerate(ut["user"])}
    if any(u not in upos for u in ds.users):
        return None
    pi = np.asarray([ut["pi"][upos[u]] for u in ds.users], dtype=np.float64)
    stay = read_json(world_f)["stay"]
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
    arch: str = "recdag"           # pretrain.recipe: block layout (pipeline.seqrec.model)
    recipe: str = "recdag"         # the optimisation procedure of this run (pretrain.recipe or finetune.recipe)
    negatives: str = "shared"      # shared (recdag) | per_row (srt)
    smoothing: float = 0.0         # added to every item's popularity count (srt: 1)
    srt_final_div_factor: float = 0.1
    base_momentum: float = 0.85
    max_momentum: float = 0.95
    grad_accum: int = 1
    phases: tuple = ()             # srt progressive unfreezing (recipe.Phase); () = one phase, every weight
    keep: str = "best"             # best (early stopping, best reload) | last (each phase's last epoch)
    ewc_lambda: float = 0.0
    ewc_batches: int = 0
    user_frac: float = 1.0
    eval_seed: int | None = None   # evaluation users / sampled candidates; None = seed. Pretraining: one per
                                   # scaled set, so every model size is ranked on the same users and candidates


def run_config(pt: PretrainParams, *, size: str, max_len: int, seed: int, run: str,
               finetune: FinetuneParams | None = None, variant: str = "scratch", data: str = "") -> RunConfig:
    """The run of pretraining (``finetune`` None: sampled loss, ``sampled_<pretrain.eval_negatives>``,
    monitor NDCG@5) or of one fine-tuning ``variant`` (scratch | pretrained: finetune's loss, epochs, batch,
    lr, patience; full ranking, monitor NDCG@10); architecture and the rest of the optimisation from ``pt``.
    The run's seed is derived from the one ``seed`` and ``run`` (the pretraining run name or the dataset);
    a pretraining run's evaluation seed from ``data`` (the scaled set), so runs on one set are paired."""
    layers, dim = pretrain_size(pt.sizes, size)
    shared = dict(layers=layers, dim=dim, heads=pt.heads, ffn_mult=pt.ffn_mult, dropout=pt.dropout, max_len=max_len,
                  num_negatives=pt.num_negatives, neg_alpha=pt.neg_alpha, logq=pt.logq, weight_decay=pt.weight_decay,
                  clip_norm=pt.clip_norm, warmup=pt.warmup, div_factor=pt.div_factor,
                  final_div_factor=pt.final_div_factor, arch=pt.recipe,
                  srt_final_div_factor=pt.srt.final_div_factor, base_momentum=pt.srt.base_momentum,
                  max_momentum=pt.srt.max_momentum)
    srt_proc = dict(negatives="per_row", smoothing=1.0, clip_norm=0.0)     # the release's, both stages
    if finetune is None:
        return RunConfig(item_repr=pt.item_repr, loss="sampled", epochs=pt.epochs, batch_size=pt.batch_size,
                         lr=pt.lr, patience=pt.patience, protocol=f"sampled_{pt.eval_negatives}",
                         eval_negatives=pt.eval_negatives, eval_users=pt.eval_users, mask_history=True,
                         monitor="ndcg@5", seed=derive_seed(seed, "amazon-pretrain", run) % 2**31,
                         eval_seed=derive_seed(seed, "amazon-eval", data or run) % 2**31,
                         **{**shared, "recipe": pt.recipe, **(srt_proc if pt.recipe == "srt" else {})})
    f = finetune
    base = dict(item_repr="text" if variant == "pretrained" else f.item_repr, loss=f.loss, epochs=f.epochs,
                batch_size=f.batch_size, lr=f.lr, patience=f.patience, protocol="full_ranking",
                eval_negatives=0, eval_users=0, mask_history=f.mask_history, monitor="ndcg@10",
                seed=derive_seed(seed, "amazon-finetune", run) % 2**31, user_frac=f.user_frac, recipe=f.recipe)
    if f.recipe == "recdag":
        return RunConfig(**base, **shared)
    s = f.srt
    srt = {**shared, **srt_proc, "loss": "sampled"}                          # InfoNCE, whatever finetune.loss says
    if variant == "scratch":                                                 # the release's from_scratch method
        return RunConfig(**{**base, **srt, "num_negatives": s.num_negatives})
    phases = tuple(progressive_phases(layers, s.epochs_per_layer, s.final_epochs, s.freeze_embeddings))
    return RunConfig(**{**base, **srt, "phases": phases, "keep": "last", "grad_accum": s.grad_accum,
                        "ewc_lambda": s.ewc_lambda, "ewc_batches": s.ewc_batches,
                        "epochs": sum(ph.epochs for ph in phases)})


def finetune_variants(from_: str) -> list[str]:
    """``from: pretrained`` also trains the scratch reference (same architecture, seed and schedule)."""
    return ["scratch", "pretrained"] if from_ == "pretrained" else ["scratch"]


def init_model(cfg: RunConfig, ds: SeqDataset, tokenizer, max_title: int, max_brand: int,
               pretrained: Path | None = None) -> tuple[SASRec, dict | None]:
    """The model of a run, seeded with ``cfg.seed``: text item encoder over the catalogue's title/brand tokens
    (``cfg.item_repr`` text) or an id table; ``pretrained``: a pretraining run's model.pt loaded into it.
    Returns (model, tokenizer coverage of the catalogue or None)."""
    tokens = cov = None
    if cfg.item_repr == "text":
        *tokens, cov = item_tokens(ds, tokenizer, max_title, max_brand)
    seed_everything(cfg.seed)
    model = make_model(cfg, ds, tokens, tokenizer.get_vocab_size())
    if pretrained is not None:
        load_pretrained(model, pretrained)
    return model, cov


def make_model(cfg: RunConfig, ds: SeqDataset, tokens: tuple | None, vocab_size: int) -> SASRec:
    kw = dict(dim=cfg.dim, layers=cfg.layers, heads=cfg.heads, ffn_mult=cfg.ffn_mult, max_len=cfg.max_len,
              dropout=cfg.dropout, arch=cfg.arch)
    if cfg.item_repr == "text":
        return build_model("text", vocab_size=vocab_size, title_tokens=tokens[0], brand_tokens=tokens[1], **kw)
    return build_model("id", num_items=ds.num_items, **kw)


def make_rule(cfg: RunConfig, params: list, epochs: int, steps_per_epoch: int):
    """The step rule of ``cfg.recipe`` over ``params`` for a phase of ``epochs``."""
    if cfg.recipe == "srt":
        return SrtOneCycleAdam(params, lr=cfg.lr, weight_decay=cfg.weight_decay, epochs=epochs,
                               steps_per_epoch=steps_per_epoch, pct_start=cfg.warmup, div_factor=cfg.div_factor,
                               final_div_factor=cfg.srt_final_div_factor, base_momentum=cfg.base_momentum,
                               max_momentum=cfg.max_momentum, accumulate=cfg.grad_accum)
    return OneCycleAdam(params, lr=cfg.lr, weight_decay=cfg.weight_decay, clip_norm=cfg.clip_norm,
                        total_steps=epochs * steps_per_epoch, warmup=cfg.warmup, div_factor=cfg.div_factor,
                        final_div_factor=cfg.final_div_factor)


def sampled_task(cfg: RunConfig, ds: SeqDataset, **kw) -> SeqRecTask:
    """The InfoNCE task of ``cfg`` on ``ds``'s training popularity (EWC's Fisher: the pretraining loss)."""
    return SeqRecTask(loss="sampled", num_items=ds.num_items, num_negatives=cfg.num_negatives,
                      popularity=ds.train_popularity(), neg_alpha=cfg.neg_alpha, logq=cfg.logq,
                      negatives=cfg.negatives, smoothing=cfg.smoothing, seed=cfg.seed, **kw)


def fit_ewc(cfg: RunConfig, pretrain_ds: SeqDataset, tokenizer, max_title: int, max_brand: int,
            init_file: Path) -> EWCPenalty:
    """The release's EWC for a fine-tuning run: the pretrained model over its own (pretraining) catalogue,
    the Fisher of its pretraining loss on ``cfg.ewc_batches`` batches of the pretraining sequences."""
    pre = RunConfig(**{**cfg.__dict__, "item_repr": "text"})
    *tokens, _ = item_tokens(pretrain_ds, tokenizer, max_title, max_brand)
    model = make_model(pre, pretrain_ds, tokens, tokenizer.get_vocab_size())
    load_pretrained(model, init_file)
    data = pack_sequences([s[:-2] for s in pretrain_ds.seqs], cfg.max_len)
    return EWCPenalty.fit(cfg.ewc_lambda, model, sampled_task(pre, pretrain_ds), data, batch_size=cfg.batch_size,
                          batches=cfg.ewc_batches, seed=cfg.seed)


def train_and_evaluate(cfg: RunConfig, ds: SeqDataset, model: SASRec, *, checkpoint_dir: Path,
                       tb_dir: Path | None, oracle: Oracle | None, max_steps: int = 0,
                       penalty: EWCPenalty | None = None) -> dict:
    """Fit with the one loop (early stopping on valid ``cfg.monitor`` and best reload, or ``keep: last``;
    resume), phase by phase for a progressive schedule, on ``cfg.user_frac`` of the training users, then
    evaluate train/valid/test on every user (with the oracle beside the model on synthetic data)."""
    t0 = time.time()
    users = ds.training_users(cfg.user_frac, cfg.seed)
    train = pack_sequences([ds.seqs[k][:-2] for k in users], cfg.max_len)
    if len(train) == 0:
        raise DataError(ds.name, "no user has 4 or more interactions", expected="leave-one-out needs >= 4")
    eval_seed = cfg.seed if cfg.eval_seed is None else cfg.eval_seed
    splits = {sp: eval_split(ds.seqs, sp, cfg.max_len, limit=cfg.eval_users, seed=eval_seed)
              for sp in ("train", "valid", "test")}
    task = SeqRecTask(loss=cfg.loss, num_items=ds.num_items, num_negatives=cfg.num_negatives,
                      popularity=ds.train_popularity(users), neg_alpha=cfg.neg_alpha, logq=cfg.logq,
                      protocol=cfg.protocol, eval_negatives=cfg.eval_negatives, mask_history=cfg.mask_history,
                      monitor=cfg.monitor, oracle=oracle, seed=eval_seed, negatives=cfg.negatives,
                      smoothing=cfg.smoothing, penalty=penalty, keep=cfg.keep)
    phases = list(cfg.phases) or [Phase("all", cfg.epochs, False, -1)]
    history, steps, best_epoch, epochs_run = [], 0, 0, 0
    for k, ph in enumerate(phases):
        if cfg.phases:
            set_trainable(model, ph.freeze_embeddings, ph.top_blocks)
        params = [p for p in model.parameters() if p.requires_grad]
        world = rank_world()[1]                                   # torchrun: each rank takes batch_size / world
        rule = make_rule(cfg, params, ph.epochs, train.steps_per_epoch(max(1, cfg.batch_size // world), world))
        loop = LoopConfig(epochs=ph.epochs, batch_size=cfg.batch_size, patience=cfg.patience, lr_decay=1.0,
                          min_lr=0.0, checkpoint_every_steps=50, seed=cfg.seed + k, max_steps=max_steps)
        one = len(phases) == 1
        trainer = Trainer(model, rule, loop, embedding_params=model.embedding_parameters(),
                          checkpoint_dir=checkpoint_dir if one else Path(checkpoint_dir) / f"{k}-{ph.name}",
                          tb_dir=tb_dir if one or tb_dir is None else Path(tb_dir) / ph.name, task=task)
        state = trainer.fit(train, splits["valid"])
        history += state.history if one else [{**h, "phase": ph.name} for h in state.history]
        best_epoch, epochs_run, steps = epochs_run + state.best_epoch, epochs_run + len(state.history), \
            steps + state.global_step
        if max_steps and not state.finished:
            break                                                 # simulated kill (tests)
    model.requires_grad_(True)
    metrics = {sp: task.evaluate_model(model, d, with_oracle=True) for sp, d in splits.items()}
    return {"metrics": metrics, "history": history, "best_epoch": best_epoch, "epochs_run": epochs_run,
            "steps": steps, "train_rows": len(train), "train_users": int(len(users)),
            "phases": [ph.name for ph in phases] if cfg.phases else [],
            **parameter_counts(model), "wall_seconds": round(time.time() - t0, 1)}


def load_pretrained(model: SASRec, path: Path) -> dict:
    """Load a pretrained state_dict (weights only; the catalogue buffers are not in it)."""
    state = load_weights(path)
    missing, unexpected = model.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise ConfigError(f"finetune.init_size: the pretrained checkpoint {path} does not fit this model "
                          f"(missing {missing[:3]}, unexpected {unexpected[:3]})")
    return {"loaded_tensors": len(state)}


def save_model(folder: Path, model: SASRec, config: dict) -> None:
    """``folder/model.pt`` (the state_dict) and ``folder/config.json``."""
    torch.save(model.state_dict(), folder / "model.pt")
    write_json(folder / "config.json", config)


SPLIT = "train, valid and test (leave-one-out)"


def pretrain_report(ds: SeqDataset, cfg: RunConfig, res: dict, *, scale: int, size: str, synthetic: bool,
                    coverage: dict | None) -> dict:
    """The metrics JSON of a pretraining run (the headline: test NDCG@5 beside the oracle's)."""
    report = {"dataset": ds.name, "split": SPLIT, "protocol": cfg.protocol, "synthetic": synthetic, "scale": scale,
              "recipe": cfg.recipe, "interactions": ds.interactions, "users": len(ds.users), "items": ds.num_items,
              "size": size,
              "layers": cfg.layers, "hidden": cfg.dim, "heads": cfg.heads, "item_repr": cfg.item_repr,
              "params_total": res["params_total"], "params_non_embedding": res["params_non_embedding"],
              "best_epoch": res["best_epoch"], "epochs_run": res["epochs_run"], "steps": res["steps"],
              "wall_seconds": res["wall_seconds"], "tokenizer_coverage": coverage,
              "test_ndcg@5": res["metrics"]["test"]["ndcg@5"], "metrics": res["metrics"]}
    if "oracle_ndcg@5" in res["metrics"]["test"]:
        report["test_oracle_ndcg@5"] = res["metrics"]["test"]["oracle_ndcg@5"]
    return report


def pretrain_model_config(model: SASRec, cfg: RunConfig, *, vocab_size: int, trained_on: str) -> dict:
    return {"item_repr": cfg.item_repr, **model.config, "vocab_size": vocab_size, "ffn_mult": cfg.ffn_mult,
            "trained_on": trained_on}


def learning_curve(history: list) -> list:
    """The DVC plot of a run: per evaluation, train loss, the valid ranking metrics and the lr."""
    return [{"epoch": h["epoch"], "step": h["step"], "train_loss": h["train_loss"],
             **{k: v for k, v in h.items() if k.startswith("valid_") and "@" in k}, "lr": h["lr"]} for h in history]


VARIANT_KEYS = ("metrics", "params_total", "params_non_embedding", "best_epoch", "epochs_run", "steps",
                "wall_seconds", "item_repr", "init", "train_users", "phases")


def finetune_report(ds: SeqDataset, results: dict[str, dict], *, f: FinetuneParams, synthetic: bool,
                    coverage: dict | None) -> dict:
    """The metrics JSON of a fine-tuning dataset: the ``finetune.from`` variant's figures at the top (test
    NDCG@10 beside the oracle's) and every variant trained (scratch, and pretrained) under ``variants``;
    ``results[variant]`` is :func:`train_and_evaluate`'s dict plus ``item_repr`` and ``init``."""
    main = results[f.from_]
    report = {"dataset": ds.name, "split": SPLIT, "protocol": "full_ranking", "synthetic": synthetic,
              "from": f.from_, "recipe": f.recipe, "arch": main_arch(results), "user_frac": f.user_frac,
              "train_users": main["train_users"], "users": len(ds.users), "items": ds.num_items,
              "interactions": ds.interactions, "size": f.init_size, "loss": "sampled" if f.recipe == "srt" else f.loss, "mask_history": f.mask_history, "tokenizer_coverage": coverage,
              "params_total": main["params_total"], "params_non_embedding": main["params_non_embedding"],
              "test_ndcg@10": main["metrics"]["test"]["ndcg@10"], "metrics": main["metrics"],
              "variants": {v: {k: r[k] for k in VARIANT_KEYS} for v, r in results.items()}}
    if "oracle_ndcg@10" in main["metrics"]["test"]:
        report["test_oracle_ndcg@10"] = main["metrics"]["test"]["oracle_ndcg@10"]
    return report


def main_arch(results: dict[str, dict]) -> str:
    return next(iter(results.values())).get("arch", "recdag")


def finetune_model_config(model: SASRec, cfg: RunConfig, ds: SeqDataset, *, from_: str, vocab_size: int) -> dict:
    return {"item_repr": cfg.item_repr, **model.config, "from": from_, "vocab_size": vocab_size,
            "num_items": ds.num_items, "items": ds.items}


# ------------------------------------------------------------------------------------------------ whole runs
# (the bodies of the pretrain / finetune stages, shared with the Amazon study's stages)


def pretrain_run(pt: PretrainParams, *, seed: int, scale: int, size: str, max_len: int, max_title: int,
                 max_brand: int, folder: Path, tok_file: Path, oracle_dir: Path, checkpoint_dir: Path,
                 tb_dir: Path | None) -> tuple[SASRec, RunConfig, dict, dict]:
    """Pretrain ``size`` on the scaled set in ``folder``: (model, config, metrics report, learning curve).
    The checkpoint folder is the caller's (``resumable``)."""
    ds, tok = load_recbole_dataset(folder), load_tokenizer(tok_file)
    cfg = run_config(pt, size=size, max_len=max_len, seed=seed, run=f"{scale}-{size}", data=f"pretrain-{scale}")
    model, cov = init_model(cfg, ds, tok, max_title, max_brand)
    res = train_and_evaluate(cfg, ds, model, checkpoint_dir=checkpoint_dir, tb_dir=tb_dir,
                             oracle=load_oracle(oracle_dir, ds))
    report = pretrain_report(ds, cfg, res, scale=scale, size=size, synthetic=(oracle_dir / "world.json").is_file(),
                             coverage=cov)
    return model, cfg, report, {"curve": learning_curve(res["history"]), "vocab_size": tok.get_vocab_size(),
                                "trained_on": ds.name}


def pretrain_key(pt: PretrainParams, *, seed: int, scale: int, size: str, max_len: int, max_title: int,
                 max_brand: int, folder: Path, tok_file: Path) -> tuple:
    """What a pretraining run's resume checkpoint is keyed by."""
    cfg = run_config(pt, size=size, max_len=max_len, seed=seed, run=f"{scale}-{size}", data=f"pretrain-{scale}")
    return cfg, md5_file(folder / f"{folder.name}.inter"), md5_file(tok_file), max_title, max_brand


def finetune_runs(pt: PretrainParams, f: FinetuneParams, *, seed: int, dataset: str, max_len: int, max_title: int,
                  max_brand: int, folder: Path, tok_file: Path, init_file: Path, init_name: str,
                  pretrain_folder: Path, oracle_dir: Path, checkpoints, ckpt_root: Path, ckpt_name: str,
                  tb_root: Path | None) -> dict:
    """Every variant of ``finetune.from`` (scratch, and pretrained) on the set in ``folder``. ``checkpoints``
    is the caller's ExitStack: each variant's resume folder (``ckpt_root/<ckpt_name>-<variant>-<key>``) stays
    until the caller has written its outputs. Returns {ds, tok, coverage, oracle, results, models}."""
    ds, tok = load_recbole_dataset(folder), load_tokenizer(tok_file)
    oracle, data_md5 = load_oracle(oracle_dir, ds), (md5_file(folder / f"{folder.name}.inter"), md5_file(tok_file))
    results, models, cov = {}, {}, None
    for variant in finetune_variants(f.from_):
        cfg = run_config(pt, size=f.init_size, max_len=max_len, seed=seed, run=dataset, finetune=f, variant=variant)
        pretrained = init_file if variant == "pretrained" else None
        model, cov = init_model(cfg, ds, tok, max_title, max_brand, pretrained=pretrained)
        penalty = None
        if pretrained is not None and cfg.ewc_lambda > 0:
            penalty = fit_ewc(cfg, load_recbole_dataset(pretrain_folder), tok, max_title, max_brand, pretrained)
        ckpt = checkpoints.enter_context(resumable(ckpt_root, f"{ckpt_name}-{variant}", cfg, variant,
                                                   md5_file(pretrained) if pretrained else "", *data_md5,
                                                   rank_world()[1]))
        res = train_and_evaluate(cfg, ds, model, checkpoint_dir=ckpt, oracle=oracle, penalty=penalty,
                                 tb_dir=None if tb_root is None else tb_root / f"{dataset}-{variant}")
        results[variant] = {**res, "item_repr": cfg.item_repr, "init": init_name if pretrained else None,
                            "arch": cfg.arch}
        models[variant] = (model, cfg)
    return {"ds": ds, "tok": tok, "coverage": cov, "oracle": oracle, "results": results, "models": models}
