"""Typed params of the Amazon scaling branch (sections ``amazon``, ``pretrain``, ``finetune``).

No defaults here: they live in params.yaml. ``validate()`` raises ConfigError naming the key; the
cross-section checks are :data:`CHECKS` (run by ``pipeline.core.params.load_stage`` for a stage that loads
all the sections a check names). :data:`SECTIONS` are the section classes the Amazon stages load.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import ClassVar, Literal

from pipeline.core.errors import ConfigError

FINETUNE_DATASETS = ("beauty", "sports")
SIZE_RE = re.compile(r"^(\d+)x(\d+)$")


def parse_size(size: str, key: str = "pretrain.sizes") -> tuple[int, int]:
    """A model size ``"<layers>x<hidden>"`` (e.g. ``"2x64"``) -> (layers, hidden)."""
    m = SIZE_RE.match(size)
    if not m or int(m.group(1)) < 1 or int(m.group(2)) < 1:
        raise ConfigError(f"{key}: '{size}' is not a model size '<layers>x<hidden>' (e.g. '2x64')")
    return int(m.group(1)), int(m.group(2))


@dataclass(frozen=True)
class AmazonSynthetic:
    """The embedded synthetic Amazon world (pipeline.seqrec.synthetic)."""

    pool_users: int           # users of the v2-style ratings pool (pretraining side)
    beauty_users: int         # users of the 2014-style Beauty 5-core file (also present in the pool ratings)
    sports_users: int         # users of the 2014-style Sports 5-core file
    items_per_cluster: int    # catalogue size = clusters x items_per_cluster
    clusters_per_category: int
    mean_length: float        # mean interactions per user (geometric tail above the 5 minimum)
    stay: float               # probability that the next item stays in the user's current cluster
    concentration: float      # Dirichlet concentration of a user's cluster preferences (small = focused)
    missing_meta: float       # share of items written without a metadata line (the ETL drops them)
    short_users: float        # share of pool users with fewer than 5 interactions (the ETL drops them)


@dataclass(frozen=True)
class AmazonLocal:
    """amazon.source=local: the user's files (hard-linked or copied into data/amazon/raw by download)."""

    ratings: list[str]        # Amazon v2 ratings CSVs (item,user,rating,timestamp; no header); .gz allowed
    metadata: list[str]       # metadata JSON lines (asin, title, brand, category); .gz allowed; 2014 meta too
    finetune_format: Literal["reviews", "recbole", "s3rec"]
    beauty: str               # reviews: reviews_Beauty_5.json(.gz); recbole: folder with <name>.inter/.item;
    sports: str               # s3rec: Beauty.txt (ids only: id-based models only)


@dataclass(frozen=True)
class AmazonParams:
    SECTION: ClassVar[str] = "amazon"

    source: Literal["synthetic", "local"]
    synthetic: AmazonSynthetic
    local: AmazonLocal
    finetune_datasets: list[str]
    scales: list[int]          # interactions per scaled pretraining set (seeded user sampling, nested)
    min_user_interactions: int
    vocab_size: int            # BPE item-text vocabulary
    max_title_tokens: int
    max_brand_tokens: int
    max_len: int               # longest history fed to the model (SASRec: 50)
    batch_rows: int            # rows per streamed CSV batch
    buckets: int               # hash partitions of the ratings pool (bounded-memory grouping by user)

    def validate(self) -> None:
        for d in self.finetune_datasets:
            if d not in FINETUNE_DATASETS:
                raise ConfigError(f"amazon.finetune_datasets: '{d}' is not one of {list(FINETUNE_DATASETS)}")
        if not self.scales or sorted(set(self.scales)) != list(self.scales):
            raise ConfigError(f"amazon.scales: {self.scales} must be non-empty, strictly increasing")
        if self.scales[0] < 100:
            raise ConfigError(f"amazon.scales: {self.scales[0]} is too small (>= 100 interactions)")
        for key, v, lo in (("amazon.min_user_interactions", self.min_user_interactions, 3),
                           ("amazon.vocab_size", self.vocab_size, 50),
                           ("amazon.max_title_tokens", self.max_title_tokens, 1),
                           ("amazon.max_brand_tokens", self.max_brand_tokens, 1),
                           ("amazon.max_len", self.max_len, 2), ("amazon.batch_rows", self.batch_rows, 1),
                           ("amazon.buckets", self.buckets, 1),
                           ("amazon.synthetic.pool_users", self.synthetic.pool_users, 10),
                           ("amazon.synthetic.beauty_users", self.synthetic.beauty_users, 10),
                           ("amazon.synthetic.sports_users", self.synthetic.sports_users, 10),
                           ("amazon.synthetic.items_per_cluster", self.synthetic.items_per_cluster, 2),
                           ("amazon.synthetic.clusters_per_category", self.synthetic.clusters_per_category, 1)):
            if v < lo:
                raise ConfigError(f"{key}: {v} must be >= {lo}")
        s = self.synthetic
        for key, v in (("amazon.synthetic.stay", s.stay), ("amazon.synthetic.missing_meta", s.missing_meta),
                       ("amazon.synthetic.short_users", s.short_users)):
            if not 0.0 <= v < 1.0:
                raise ConfigError(f"{key}: {v} is not in [0, 1)")
        if s.mean_length < 5 or s.concentration <= 0:
            raise ConfigError("amazon.synthetic.mean_length must be >= 5 and amazon.synthetic.concentration > 0")
        if self.source == "local":
            if not self.local.ratings or not self.local.metadata:
                raise ConfigError("amazon.local.ratings: amazon.source=local needs ratings and metadata files")
            for d in self.finetune_datasets:
                if not getattr(self.local, d):
                    raise ConfigError(f"amazon.local.{d}: must be set when amazon.source is 'local'")


@dataclass(frozen=True)
class SrtSchedule:
    """pretrain.srt: the release's OneCycleLR settings (recipe srt only; pretraining and fine-tuning)."""

    final_div_factor: float   # torch OneCycleLR: final lr = lr / div_factor / final_div_factor (release: 0.1)
    base_momentum: float      # beta1 cycles between these, inverse to the lr (cycle_momentum; release: torch's)
    max_momentum: float


@dataclass(frozen=True)
class SrtFinetune:
    """finetune.srt: the release's fine-tuning procedure (finetune.recipe srt only)."""

    num_negatives: int        # from-scratch runs, per row (release from_scratch: 300); pretrained runs use
                              # pretrain.num_negatives (the release reuses the pretraining config's)
    epochs_per_layer: int     # progressive unfreezing: epochs per newly unfrozen top block (release: 10)
    final_epochs: int         # then every weight (release: 50)
    freeze_embeddings: bool   # token and position embeddings frozen while blocks unfreeze (release: true)
    ewc_lambda: float         # EWC penalty weight, 0 = off (release: 100)
    ewc_batches: int          # pretraining batches the Fisher is averaged over (release: 3000)
    grad_accum: int           # optimiser steps every this many batches (release fine-tuning: 10)


@dataclass(frozen=True)
class PretrainParams:
    """Pretraining (matrix: amazon.scales x pretrain.sizes) and the optimisation shared with finetune."""

    SECTION: ClassVar[str] = "pretrain"

    recipe: Literal["recdag", "srt"]   # architecture + pretraining procedure (README "Recipes: srt vs recdag")
    sizes: list[str]           # model sizes '<layers>x<hidden>'
    heads: int
    ffn_mult: int              # FFN inner width = ffn_mult x hidden
    dropout: float
    item_repr: Literal["text", "id"]
    num_negatives: int         # popularity-sampled negatives per batch, shared by all positions
    neg_alpha: float           # q(i) ~ count(i)^neg_alpha
    logq: bool                 # logQ correction of the sampled softmax
    epochs: int
    batch_size: int            # sequences per batch
    lr: float                  # one-cycle peak learning rate (Adam)
    weight_decay: float
    clip_norm: float
    warmup: float              # one-cycle: share of steps warming up
    div_factor: float          # one-cycle: start lr = lr / div_factor
    final_div_factor: float    # one-cycle: final lr = lr / div_factor / final_div_factor
    patience: int
    eval_negatives: int        # sampled protocol: target vs this many uniformly sampled negatives
    eval_users: int            # users evaluated per split (0 = all)
    srt: SrtSchedule

    def validate(self) -> None:
        if not self.sizes:
            raise ConfigError("pretrain.sizes: name at least one model size")
        for s in self.sizes:
            _, hidden = parse_size(s)
            if hidden % self.heads:
                raise ConfigError(f"pretrain.sizes: hidden {hidden} of '{s}' is not divisible by pretrain.heads "
                                  f"({self.heads})")
        if len(set(self.sizes)) != len(self.sizes):
            raise ConfigError(f"pretrain.sizes: duplicate entries in {self.sizes}")
        _common(self, "pretrain")
        if self.eval_negatives < 1:
            raise ConfigError(f"pretrain.eval_negatives: {self.eval_negatives} must be >= 1")
        m = self.srt
        if m.final_div_factor <= 0:
            raise ConfigError(f"pretrain.srt.final_div_factor: {m.final_div_factor} must be > 0")
        if not 0.0 <= m.base_momentum <= m.max_momentum < 1.0:
            raise ConfigError(f"pretrain.srt.base_momentum / max_momentum: {m.base_momentum} / {m.max_momentum} "
                              "must satisfy 0 <= base <= max < 1")


@dataclass(frozen=True)
class FinetuneParams:
    """Fine-tuning (foreach amazon.finetune_datasets); architecture and the rest of the optimisation: pretrain."""

    SECTION: ClassVar[str] = "finetune"

    recipe: Literal["recdag", "srt"]   # fine-tuning procedure (the architecture is pretrain.recipe's)
    from_: Literal["scratch", "pretrained"] = field(metadata={"key": "from"})
    init_scale: int            # the pretrained run to start from (and whose architecture scratch uses)
    init_size: str
    item_repr: Literal["text", "id"]   # scratch only; pretrained always uses the pretrained (text) encoder
    loss: Literal["ce", "sampled"]     # ce: full softmax over the catalogue; sampled: pretrain's InfoNCE
    epochs: int
    batch_size: int
    lr: float
    patience: int
    mask_history: bool         # full ranking: a user's earlier items are not ranked (RecBole's full sort)
    user_frac: float           # seeded share of the training users fine-tuned on (valid/test: every user)
    srt: SrtFinetune

    def validate(self) -> None:
        parse_size(self.init_size, "finetune.init_size")
        if not 0.0 < self.user_frac <= 1.0:
            raise ConfigError(f"finetune.user_frac: {self.user_frac} is not in (0, 1]")
        s = self.srt
        for key, v, lo in (("num_negatives", s.num_negatives, 1), ("epochs_per_layer", s.epochs_per_layer, 0),
                           ("final_epochs", s.final_epochs, 0), ("ewc_batches", s.ewc_batches, 1),
                           ("grad_accum", s.grad_accum, 1)):
            if v < lo:
                raise ConfigError(f"finetune.srt.{key}: {v} must be >= {lo}")
        if s.epochs_per_layer + s.final_epochs < 1:
            raise ConfigError("finetune.srt.epochs_per_layer / final_epochs: the progressive schedule has no epoch")
        if s.ewc_lambda < 0:
            raise ConfigError(f"finetune.srt.ewc_lambda: {s.ewc_lambda} must be >= 0")
        for key, v in (("finetune.epochs", self.epochs), ("finetune.batch_size", self.batch_size),
                       ("finetune.patience", self.patience)):
            if v < 1:
                raise ConfigError(f"{key}: {v} must be >= 1")
        if self.lr <= 0:
            raise ConfigError(f"finetune.lr: {self.lr} must be > 0")


def _common(p: PretrainParams, prefix: str) -> None:
    for key, v in (("heads", p.heads), ("ffn_mult", p.ffn_mult), ("num_negatives", p.num_negatives),
                   ("epochs", p.epochs), ("batch_size", p.batch_size), ("patience", p.patience)):
        if v < 1:
            raise ConfigError(f"{prefix}.{key}: {v} must be >= 1")
    if not 0.0 <= p.dropout < 1.0:
        raise ConfigError(f"{prefix}.dropout: {p.dropout} is not in [0, 1)")
    if p.lr <= 0 or p.weight_decay < 0 or p.clip_norm < 0:
        raise ConfigError(f"{prefix}.lr must be > 0, {prefix}.weight_decay and {prefix}.clip_norm >= 0")
    if not 0.0 < p.warmup < 1.0:
        raise ConfigError(f"{prefix}.warmup: {p.warmup} is not in (0, 1)")
    if p.div_factor < 1 or p.final_div_factor < 1:
        raise ConfigError(f"{prefix}.div_factor and {prefix}.final_div_factor must be >= 1")


def pretrain_size(sizes: list[str], size: str) -> tuple[int, int]:
    """(layers, hidden) of ``size``, which must be one of ``pretrain.sizes``."""
    if size not in sizes:
        raise ConfigError(f"pretrain.sizes: '{size}' is not listed ({sizes})")
    return parse_size(size)


def run_name(scale: int, size: str) -> str:
    """The name of the pretraining run on the ``scale`` set with model ``size`` (dvc.yaml matrix item)."""
    parse_size(size)
    return f"{scale}-{size}"


def _check_init_run(s: dict) -> None:
    a, pt, f = s["amazon"], s["pretrain"], s["finetune"]
    if f.init_scale not in a.scales:
        raise ConfigError(f"finetune.init_scale: {f.init_scale} is not one of amazon.scales {a.scales}")
    if f.init_size not in pt.sizes:
        raise ConfigError(f"finetune.init_size: '{f.init_size}' is not one of pretrain.sizes {pt.sizes}")


def _check_pretrained_is_text(s: dict) -> None:
    if s["finetune"].from_ == "pretrained" and s["pretrain"].item_repr != "text":
        raise ConfigError("finetune.from: 'pretrained' needs pretrain.item_repr 'text' (an id-based model has "
                          "no weights for another catalogue's items)")


def _check_s3rec_has_no_text(s: dict) -> None:
    a, f = s["amazon"], s["finetune"]
    if a.source == "local" and a.local.finetune_format == "s3rec" and (
            f.from_ == "pretrained" or f.item_repr == "text"):
        raise ConfigError("finetune.item_repr: S3-Rec files carry no item text; use finetune.item_repr: id and "
                          "finetune.from: scratch")


SECTIONS = (AmazonParams, PretrainParams, FinetuneParams)
# (sections, check): a stage that loads all of a check's sections declares the keys the check reads
CHECKS = [(("amazon", "pretrain", "finetune"), _check_init_run),          # amazon.scales, pretrain.sizes
          (("pretrain", "finetune"), _check_pretrained_is_text),          # pretrain.item_repr
          (("amazon", "finetune"), _check_s3rec_has_no_text)]             # amazon.source, .local.finetune_format
