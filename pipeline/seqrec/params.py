"""Typed params of the Amazon scaling branch (sections ``amazon``, ``pretrain``, ``finetune``).

No defaults here: they live in params.yaml. Valid ranges are declared on the fields (checked when params.yaml
is parsed); ``validate()`` makes the checks a range cannot, raising ConfigError naming the key; the
cross-section checks are :data:`CHECKS` (run by ``pipeline.core.params.load_stage`` for a stage that loads
all the sections a check names). :data:`SECTIONS` are the section classes the Amazon stages load.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Annotated, ClassVar, Literal

from pipeline.core.errors import ConfigError
from pipeline.core.params import (
    NonNegFloat, NonNegInt, OpenFrac, PosFloat, PosInt, Range, UserPath, check_ranges,
)

FINETUNE_DATASETS = ("beauty", "sports")
SIZE_RE = re.compile(r"^(\d+)x(\d+)$")

Share = Annotated[float, Range(ge=0, lt=1)]        # a share of a set that cannot be all of it (dropout too)
Users = Annotated[int, Range(ge=10)]              # users of a synthetic file


def parse_size(size: str, key: str = "pretrain.sizes") -> tuple[int, int]:
    """A model size ``"<layers>x<hidden>"`` (e.g. ``"2x64"``) -> (layers, hidden)."""
    m = SIZE_RE.match(size)
    if not m or int(m.group(1)) < 1 or int(m.group(2)) < 1:
        raise ConfigError(f"{key}: '{size}' is not a model size '<layers>x<hidden>' (e.g. '2x64')")
    return int(m.group(1)), int(m.group(2))


@dataclass(frozen=True)
class AmazonSynthetic:
    """The embedded synthetic Amazon world (pipeline.seqrec.synthetic)."""

    pool_users: Users         # users of the v2-style ratings pool (pretraining side)
    beauty_users: Users       # users of the 2014-style Beauty 5-core file (also present in the pool ratings)
    sports_users: Users       # users of the 2014-style Sports 5-core file
    items_per_cluster: Annotated[int, Range(ge=2)]   # catalogue size = clusters x items_per_cluster
    clusters_per_category: PosInt
    mean_length: Annotated[float, Range(ge=5, note="the 5-core minimum")]
                              # mean interactions per user (geometric tail above the 5 minimum)
    stay: Share               # probability that the next item stays in the user's current cluster
    concentration: PosFloat   # Dirichlet concentration of a user's cluster preferences (small = focused)
    missing_meta: Share       # share of items written without a metadata line (the ETL drops them)
    short_users: Share        # share of pool users with fewer than 5 interactions (the ETL drops them)


@dataclass(frozen=True)
class AmazonLocal:
    """amazon.source=local: the user's files (hard-linked or copied into data/amazon/raw by download)."""

    ratings: list[UserPath]   # Amazon v2 ratings CSVs (item,user,rating,timestamp; no header); .gz allowed
    metadata: list[UserPath]  # metadata JSON lines (asin, title, brand, category); .gz allowed; 2014 meta too
    finetune_format: Literal["reviews", "recbole", "s3rec"]
    beauty: UserPath          # reviews: reviews_Beauty_5.json(.gz); recbole: folder with <name>.inter/.item;
    sports: UserPath          # s3rec: Beauty.txt (ids only: id-based models only)


@dataclass(frozen=True)
class AmazonParams:
    SECTION: ClassVar[str] = "amazon"

    source: Literal["synthetic", "local"]
    synthetic: AmazonSynthetic
    local: AmazonLocal
    finetune_datasets: list[str]
    scales: list[Annotated[int, Range(ge=100)]]   # interactions per scaled pretraining set (seeded user
                                                  # sampling, nested; strictly increasing)
    min_user_interactions: Annotated[int, Range(ge=3)]
    vocab_size: Annotated[int, Range(ge=50)]   # BPE item-text vocabulary
    max_title_tokens: PosInt
    max_brand_tokens: PosInt
    max_len: Annotated[int, Range(ge=2)]   # longest history fed to the model (SASRec: 50)
    batch_rows: PosInt         # rows per streamed CSV batch
    buckets: PosInt            # hash partitions of the ratings pool (bounded-memory grouping by user)

    def validate(self) -> None:
        for d in self.finetune_datasets:
            if d not in FINETUNE_DATASETS:
                raise ConfigError(f"amazon.finetune_datasets: '{d}' is not one of {list(FINETUNE_DATASETS)}")
        if not self.scales or sorted(set(self.scales)) != list(self.scales):
            raise ConfigError(f"amazon.scales: {self.scales} must be non-empty, strictly increasing")
        if self.source == "local":
            if not self.local.ratings or not self.local.metadata:
                raise ConfigError("amazon.local.ratings: amazon.source=local needs ratings and metadata files")
            for d in self.finetune_datasets:
                if not getattr(self.local, d):
                    raise ConfigError(f"amazon.local.{d}: must be set when amazon.source is 'local'")


@dataclass(frozen=True)
class SrtSchedule:
    """pretrain.srt: the release's OneCycleLR settings (recipe srt only; pretraining and fine-tuning)."""

    final_div_factor: PosFloat   # torch OneCycleLR: final lr = lr / div_factor / final_div_factor (release: 0.1)
    base_momentum: Share      # beta1 cycles between these, inverse to the lr (cycle_momentum; release: torch's)
    max_momentum: Share       # >= base_momentum


@dataclass(frozen=True)
class SrtFinetune:
    """finetune.srt: the release's fine-tuning procedure (finetune.recipe srt only)."""

    num_negatives: PosInt     # from-scratch runs, per row (release from_scratch: 300); pretrained runs use
                              # pretrain.num_negatives (the release reuses the pretraining config's)
    epochs_per_layer: NonNegInt   # progressive unfreezing: epochs per newly unfrozen top block (release: 10)
    final_epochs: NonNegInt   # then every weight (release: 50); epochs_per_layer + final_epochs >= 1
    freeze_embeddings: bool   # token and position embeddings frozen while blocks unfreeze (release: true)
    ewc_lambda: Annotated[float, Range(ge=0, note="0 = off")]   # EWC penalty weight (release: 100)
    ewc_batches: PosInt       # pretraining batches the Fisher is averaged over (release: 3000)
    grad_accum: PosInt        # optimiser steps every this many batches (release fine-tuning: 10)


@dataclass(frozen=True)
class PretrainParams:
    """Pretraining (matrix: amazon.scales x pretrain.sizes) and the optimisation shared with finetune."""

    SECTION: ClassVar[str] = "pretrain"

    recipe: Literal["recdag", "srt"]   # architecture + pretraining procedure (README "Recipes: srt vs recdag")
    sizes: list[str]           # model sizes '<layers>x<hidden>'
    heads: PosInt              # must divide every size's hidden
    ffn_mult: PosInt           # FFN inner width = ffn_mult x hidden
    dropout: Share
    item_repr: Literal["text", "id"]
    num_negatives: PosInt      # popularity-sampled negatives per batch, shared by all positions
    neg_alpha: NonNegFloat     # q(i) ~ count(i)^neg_alpha (0 = uniform)
    logq: bool                 # logQ correction of the sampled softmax
    epochs: PosInt
    batch_size: PosInt         # sequences per batch
    lr: PosFloat               # one-cycle peak learning rate (Adam)
    weight_decay: NonNegFloat
    clip_norm: Annotated[float, Range(ge=0, note="0 = off")]
    warmup: OpenFrac           # one-cycle: share of steps warming up
    div_factor: Annotated[float, Range(ge=1)]         # one-cycle: start lr = lr / div_factor
    final_div_factor: Annotated[float, Range(ge=1)]   # one-cycle: final lr = lr / div_factor / final_div_factor
    patience: PosInt
    eval_negatives: PosInt     # sampled protocol: target vs this many uniformly sampled negatives
    eval_users: Annotated[int, Range(ge=0, note="0 = all")]   # users evaluated per split (0 = all)
    srt: SrtSchedule

    def validate(self) -> None:
        check_ranges(self, self.SECTION)             # a copy from pipeline.seqrec.study.with_recipe too
        if not self.sizes:
            raise ConfigError("pretrain.sizes: name at least one model size")
        for s in self.sizes:
            _, hidden = parse_size(s)
            if hidden % self.heads:
                raise ConfigError(f"pretrain.sizes: hidden {hidden} of '{s}' is not divisible by pretrain.heads "
                                  f"({self.heads})")
        if len(set(self.sizes)) != len(self.sizes):
            raise ConfigError(f"pretrain.sizes: duplicate entries in {self.sizes}")
        m = self.srt
        if m.base_momentum > m.max_momentum:
            raise ConfigError(f"pretrain.srt.base_momentum: {m.base_momentum} > pretrain.srt.max_momentum "
                              f"{m.max_momentum} (must satisfy 0 <= base <= max < 1)")


@dataclass(frozen=True)
class FinetuneParams:
    """Fine-tuning (foreach amazon.finetune_datasets); architecture and the rest of the optimisation: pretrain."""

    SECTION: ClassVar[str] = "finetune"

    recipe: Literal["recdag", "srt"]   # fine-tuning procedure (the architecture is pretrain.recipe's)
    from_: Literal["scratch", "pretrained"] = field(metadata={"key": "from"})
    init_scale: PosInt         # the pretrained run to start from (one of amazon.scales; its architecture: scratch's)
    init_size: str
    item_repr: Literal["text", "id"]   # scratch only; pretrained always uses the pretrained (text) encoder
    loss: Literal["ce", "sampled"]     # ce: full softmax over the catalogue; sampled: pretrain's InfoNCE
    epochs: PosInt
    batch_size: PosInt
    lr: PosFloat
    patience: PosInt
    mask_history: bool         # full ranking: a user's earlier items are not ranked (RecBole's full sort)
    user_frac: Annotated[float, Range(gt=0, le=1)]   # seeded share of the training users fine-tuned on
                                                     # (valid/test: every user)
    srt: SrtFinetune

    def validate(self) -> None:
        check_ranges(self, self.SECTION)             # with_recipe's user_frac (a study matrix value) too
        parse_size(self.init_size, "finetune.init_size")
        s = self.srt
        if s.epochs_per_layer + s.final_epochs < 1:
            raise ConfigError("finetune.srt.epochs_per_layer / final_epochs: the progressive schedule has no epoch")


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
