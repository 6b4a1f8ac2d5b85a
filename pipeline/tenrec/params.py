"""Typed params of the Tenrec branch: one dataclass per params.yaml section (``SECTION`` is its key):
``tenrec`` (data), ``retrieval`` (two towers), ``ann`` (FAISS), ``ranking`` (the ranker and its training /
validation protocol), ``ranking_eval`` (what only tenrec_evaluate reads) and ``encoder_scaling`` (the timing
stage). Sections follow the stages, so a stage declares whole sections and a key that only one stage reads
re-runs only that stage.

No defaults here: params.yaml holds them (with a comment per key). Valid ranges are declared on the
fields (checked when params.yaml is parsed); ``validate`` makes the checks a range cannot, raising ConfigError
naming the key; :data:`CHECKS` are the cross-section checks (``load_stage(..., checks=CHECKS)``), each run when a
stage loads all of its sections.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, ClassVar, Literal

from pipeline.core.errors import ConfigError
from pipeline.core.params import (
    Decay, NonNegFloat, NonNegInt, OpenFrac, PosFloat, PosInt, Range, UserPath,
)

ClipNorm = Annotated[float, Range(ge=0, note="0 = off")]                     # global grad-norm clipping
Dropout = Annotated[float, Range(ge=0, lt=1)]
CheckpointEvery = Annotated[int, Range(ge=0, note="0 = only at evaluations")]  # resume points (steps)
EvalUsers = Annotated[int, Range(ge=0, note="0 = all")]


@dataclass(frozen=True)
class TenrecSynthetic:
    """The embedded Tenrec-like world (pipeline.tenrec.synthetic)."""

    users: Annotated[int, Range(ge=10)]
    items: Annotated[int, Range(ge=200)]
    rows: PosInt               # exposures + clicks in the log (>= 10 x users)
    categories: PosInt         # video_category values (a share of items has `\N`)
    rank: PosInt               # rank of the planted user/item factors
    mean_ctr: OpenFrac         # mean p(click) over the logged exposures
    like_rate: OpenFrac        # mean p(like | click)
    missing_category: Annotated[float, Range(ge=0, lt=1)]   # share of items whose video_category is `\N`
    signal: PosFloat           # scale of the factor term in the click logit (oracle sharpness)


@dataclass(frozen=True)
class TenrecParams:
    SECTION: ClassVar[str] = "tenrec"

    source: Literal["synthetic", "local"]
    scenario: Literal["QB-video", "QK-video"]
    local_dir: UserPath
    batch_rows: PosInt
    history_len: PosInt        # gen_ctr.py: hist_1..hist_<history_len> (Tenrec: 10)
    min_clicks: Annotated[int, Range(ge=3, note="a train, a valid and a test click")]
                               # users with fewer clicks are train-only in the sequence view
    synthetic: TenrecSynthetic

    def validate(self) -> None:
        if self.source == "local" and not self.local_dir:
            raise ConfigError("tenrec.local_dir: must be set when tenrec.source is 'local'")
        s = self.synthetic
        if s.rows < 10 * s.users:
            raise ConfigError(f"tenrec.synthetic.rows: {s.rows} must be >= 10 x tenrec.synthetic.users ({s.users})")


@dataclass(frozen=True)
class RetrievalParams:
    SECTION: ClassVar[str] = "retrieval"

    embedding_dim: PosInt
    hidden_units: list[PosInt]       # tower MLPs (both towers), before the output projection
    history_len: PosInt              # most recent clicks pooled by the user tower
    temperature: PosFloat
    num_negatives: PosInt            # shared sampled negatives per batch (the seed: 127)
    sampler: Literal["uniform", "popularity"]
    alpha: NonNegFloat               # popularity sampler: q(i) ∝ count(i)^alpha (0 = uniform)
    logq_correction: bool
    mask_accidental_hits: bool
    exclude_history: bool            # do not retrieve items the user already clicked in train
    monitor_k: PosInt                # early stopping follows exact valid Recall@monitor_k
    eval_users: EvalUsers            # seeded subset of valid users for that evaluation (0 = all)
    lr: PosFloat
    clip_norm: ClipNorm              # global grad-norm clipping (0 = off)
    epochs: PosInt
    batch_size: PosInt
    patience: PosInt
    lr_decay: Decay
    min_lr: NonNegFloat
    checkpoint_every_steps: CheckpointEvery
    eval_batch_size: PosInt


@dataclass(frozen=True)
class AnnParams:
    SECTION: ClassVar[str] = "ann"

    index: Literal["flat", "hnsw", "ivfpq"]
    top_k: PosInt                    # candidates per evaluation user
    recall_at: list[PosInt]          # Recall@k of the held-out click (each <= top_k)
    hnsw_m: PosInt
    hnsw_ef_construction: PosInt
    hnsw_ef_search: PosInt
    ivf_nlist: PosInt
    ivf_nprobe: PosInt               # <= ivf_nlist
    pq_m: PosInt                     # sub-quantizers (must divide retrieval.embedding_dim)
    pq_nbits: Annotated[int, Range(ge=1, le=16)]
    threads: PosInt

    def validate(self) -> None:
        if not self.recall_at:
            raise ConfigError("ann.recall_at: must list at least one k")
        for i, k in enumerate(self.recall_at):
            if k > self.top_k:
                raise ConfigError(f"ann.recall_at[{i}]: {k} is not in [1, ann.top_k={self.top_k}]")
        if self.ivf_nprobe > self.ivf_nlist:
            raise ConfigError(f"ann.ivf_nprobe: {self.ivf_nprobe} > ann.ivf_nlist {self.ivf_nlist}")


@dataclass(frozen=True)
class RankingParams:
    """The ranker, its training and its validation protocol (tenrec_train_ranking reads all of it)."""

    SECTION: ClassVar[str] = "ranking"

    encoder: Literal["fastformer", "transformer"]
    embedding_dim: PosInt
    num_layers: PosInt               # the seed: 12; the embedded default is small
    num_heads: PosInt                # must divide embedding_dim
    ffn_dim: PosInt
    dropout: Dropout
    max_len: PosInt                  # most recent clicks before the target
    gradient_checkpointing: bool
    targets_per_user: Annotated[int, Range(ge=0, note="0 = all")]   # the last N train clicks of each user
    negatives_per_positive: NonNegInt   # 0 = positives only (no sampled negatives)
    negative_source: Literal["uniform", "exposures", "mixed"]
    like_weight: NonNegFloat         # task weight of the like BCE (0 = click only)
    like_pos_weight: PosFloat        # positive-class weight of the (rare) like labels
    lr: PosFloat
    clip_norm: ClipNorm
    epochs: PosInt
    batch_size: PosInt
    patience: PosInt
    lr_decay: Decay
    min_lr: NonNegFloat
    checkpoint_every_steps: CheckpointEvery
    eval_batch_size: PosInt
    eval_users: EvalUsers            # users evaluated (valid during training, test in evaluate); 0 = all
    sampled_negatives: PosInt        # protocol sampled_<1 + this>: the seed's 127
    ndcg_k: PosInt                   # NDCG@ndcg_k (the early-stopping monitor)

    def validate(self) -> None:
        if self.embedding_dim % self.num_heads:
            raise ConfigError(f"ranking.num_heads: {self.num_heads} does not divide ranking.embedding_dim "
                              f"{self.embedding_dim}")


@dataclass(frozen=True)
class RankingEvalParams:
    """What only tenrec_evaluate reads (beside ``ranking``): the retrieved_top_k protocol."""

    SECTION: ClassVar[str] = "ranking_eval"

    rerank_k: PosInt                 # protocol retrieved_top_k: the first rerank_k ANN candidates (<= ann.top_k)


@dataclass(frozen=True)
class EncoderScalingParams:
    """tenrec_encoder_scaling (timings only): the sequence lengths timed, Fastformer vs Transformer, at the
    ranker's width, heads and depth (``ranking.{embedding_dim,num_heads,ffn_dim,num_layers}``)."""

    SECTION: ClassVar[str] = "encoder_scaling"

    lengths: list[PosInt]

    def validate(self) -> None:
        if not self.lengths:
            raise ConfigError("encoder_scaling.lengths: must list at least one length")


SECTIONS = (TenrecParams, RetrievalParams, AnnParams, RankingParams, RankingEvalParams, EncoderScalingParams)


def check_rerank(sections: dict) -> None:
    """The ranker re-ranks the first ``ranking_eval.rerank_k`` of the ``ann.top_k`` ANN candidates."""
    rerank_k, top_k = sections["ranking_eval"].rerank_k, sections["ann"].top_k
    if rerank_k > top_k:
        raise ConfigError(f"ranking_eval.rerank_k: {rerank_k} > ann.top_k {top_k} "
                          "(the ranker re-ranks the first rerank_k ANN candidates)")


def check_pq(sections: dict) -> None:
    """IVF-PQ splits the item vectors (``retrieval.embedding_dim`` wide) into ``ann.pq_m`` sub-vectors."""
    a, dim = sections["ann"], sections["retrieval"].embedding_dim
    if a.index == "ivfpq" and dim % a.pq_m:
        raise ConfigError(f"ann.pq_m: {a.pq_m} does not divide retrieval.embedding_dim {dim}")


CHECKS = [(("ranking_eval", "ann"), check_rerank), (("ann", "retrieval"), check_pq)]
