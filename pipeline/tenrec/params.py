"""Typed params of the Tenrec branch: one dataclass per params.yaml section (``SECTION`` is its key):
``tenrec`` (data), ``retrieval`` (two towers), ``ann`` (FAISS), ``ranking`` (the ranker and its training /
validation protocol), ``ranking_eval`` (what only tenrec_evaluate reads) and ``encoder_scaling`` (the timing
stage). Sections follow the stages, so a stage declares whole sections and a key that only one stage reads
re-runs only that stage.

No defaults here: params.yaml holds them (with a comment per key). ``validate`` raises ConfigError naming
the key; :data:`CHECKS` are the cross-section checks (``load_stage(..., checks=CHECKS)``), each run when a
stage loads all of its sections.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Literal

from pipeline.core.errors import ConfigError


def _positive(key: str, value) -> None:
    if value < 1:
        raise ConfigError(f"{key}: {value} must be >= 1")


def _unit(key: str, value: float, *, closed_low: bool = True) -> None:
    ok = (0.0 <= value < 1.0) if closed_low else (0.0 < value < 1.0)
    if not ok:
        raise ConfigError(f"{key}: {value} is not in {'[0' if closed_low else '(0'}, 1)")


@dataclass(frozen=True)
class TenrecSynthetic:
    """The embedded Tenrec-like world (pipeline.tenrec.synthetic)."""

    users: int
    items: int
    rows: int                  # exposures + clicks in the log
    categories: int            # video_category values (a share of items has `\N`)
    rank: int                  # rank of the planted user/item factors
    mean_ctr: float            # mean p(click) over the logged exposures
    like_rate: float           # mean p(like | click)
    missing_category: float    # share of items whose video_category is `\N`
    signal: float              # scale of the factor term in the click logit (oracle sharpness)


@dataclass(frozen=True)
class TenrecParams:
    SECTION: ClassVar[str] = "tenrec"

    source: Literal["synthetic", "local"]
    scenario: Literal["QB-video", "QK-video"]
    local_dir: str
    batch_rows: int
    history_len: int           # gen_ctr.py: hist_1..hist_<history_len> (Tenrec: 10)
    min_clicks: int            # users with fewer clicks are train-only in the sequence view
    synthetic: TenrecSynthetic

    def validate(self) -> None:
        _positive("tenrec.batch_rows", self.batch_rows)
        _positive("tenrec.history_len", self.history_len)
        if self.min_clicks < 3:
            raise ConfigError(f"tenrec.min_clicks: {self.min_clicks} must be >= 3 (train, valid and test click)")
        if self.source == "local" and not self.local_dir:
            raise ConfigError("tenrec.local_dir: must be set when tenrec.source is 'local'")
        s = self.synthetic
        for key, v in (("users", s.users), ("items", s.items), ("categories", s.categories), ("rank", s.rank)):
            _positive(f"tenrec.synthetic.{key}", v)
        if s.users < 10 or s.items < 200:
            raise ConfigError("tenrec.synthetic.users/items: the world needs >= 10 users and >= 200 items")
        if s.rows < 10 * s.users:
            raise ConfigError(f"tenrec.synthetic.rows: {s.rows} must be >= 10 x tenrec.synthetic.users")
        _unit("tenrec.synthetic.mean_ctr", s.mean_ctr, closed_low=False)
        _unit("tenrec.synthetic.like_rate", s.like_rate, closed_low=False)
        _unit("tenrec.synthetic.missing_category", s.missing_category)
        if s.signal <= 0:
            raise ConfigError(f"tenrec.synthetic.signal: {s.signal} must be > 0")


@dataclass(frozen=True)
class RetrievalParams:
    SECTION: ClassVar[str] = "retrieval"

    embedding_dim: int
    hidden_units: list[int]          # tower MLPs (both towers), before the output projection
    history_len: int                 # most recent clicks pooled by the user tower
    temperature: float
    num_negatives: int               # shared sampled negatives per batch (the seed: 127)
    sampler: Literal["uniform", "popularity"]
    alpha: float                     # popularity sampler: q(i) ∝ count(i)^alpha
    logq_correction: bool
    mask_accidental_hits: bool
    exclude_history: bool            # do not retrieve items the user already clicked in train
    monitor_k: int                   # early stopping follows exact valid Recall@monitor_k
    eval_users: int                  # seeded subset of valid users for that evaluation (0 = all)
    lr: float
    clip_norm: float                 # global grad-norm clipping (0 = off)
    epochs: int
    batch_size: int
    patience: int
    lr_decay: float
    min_lr: float
    checkpoint_every_steps: int
    eval_batch_size: int

    def validate(self) -> None:
        for key in ("embedding_dim", "history_len", "num_negatives", "monitor_k", "epochs", "batch_size", "patience",
                    "eval_batch_size"):
            _positive(f"retrieval.{key}", getattr(self, key))
        for i, h in enumerate(self.hidden_units):
            _positive(f"retrieval.hidden_units[{i}]", h)
        if self.temperature <= 0:
            raise ConfigError(f"retrieval.temperature: {self.temperature} must be > 0")
        if self.eval_users < 0:
            raise ConfigError(f"retrieval.eval_users: {self.eval_users} must be >= 0")
        if self.alpha < 0:
            raise ConfigError(f"retrieval.alpha: {self.alpha} must be >= 0")
        if self.lr <= 0:
            raise ConfigError(f"retrieval.lr: {self.lr} must be > 0")
        if not 0 < self.lr_decay <= 1:
            raise ConfigError(f"retrieval.lr_decay: {self.lr_decay} is not in (0, 1]")


@dataclass(frozen=True)
class AnnParams:
    SECTION: ClassVar[str] = "ann"

    index: Literal["flat", "hnsw", "ivfpq"]
    top_k: int                       # candidates per evaluation user
    recall_at: list[int]             # Recall@k of the held-out click
    hnsw_m: int
    hnsw_ef_construction: int
    hnsw_ef_search: int
    ivf_nlist: int
    ivf_nprobe: int
    pq_m: int                        # sub-quantizers (must divide retrieval.embedding_dim)
    pq_nbits: int
    threads: int

    def validate(self) -> None:
        for key in ("top_k", "hnsw_m", "hnsw_ef_construction", "hnsw_ef_search", "ivf_nlist", "ivf_nprobe",
                    "pq_m", "pq_nbits", "threads"):
            _positive(f"ann.{key}", getattr(self, key))
        if not self.recall_at:
            raise ConfigError("ann.recall_at: must list at least one k")
        for i, k in enumerate(self.recall_at):
            if not 1 <= k <= self.top_k:
                raise ConfigError(f"ann.recall_at[{i}]: {k} is not in [1, ann.top_k={self.top_k}]")
        if self.ivf_nprobe > self.ivf_nlist:
            raise ConfigError(f"ann.ivf_nprobe: {self.ivf_nprobe} > ann.ivf_nlist {self.ivf_nlist}")
        if self.pq_nbits > 16:
            raise ConfigError(f"ann.pq_nbits: {self.pq_nbits} must be <= 16")


@dataclass(frozen=True)
class RankingParams:
    """The ranker, its training and its validation protocol (tenrec_train_ranking reads all of it)."""

    SECTION: ClassVar[str] = "ranking"

    encoder: Literal["fastformer", "transformer"]
    embedding_dim: int
    num_layers: int                  # the seed: 12; the embedded default is small
    num_heads: int
    ffn_dim: int
    dropout: float
    max_len: int                     # most recent clicks before the target
    gradient_checkpointing: bool
    targets_per_user: int            # the last N train clicks of each user are training targets (0 = all)
    negatives_per_positive: int
    negative_source: Literal["uniform", "exposures", "mixed"]
    like_weight: float               # task weight of the like BCE
    like_pos_weight: float           # positive-class weight of the (rare) like labels
    lr: float
    clip_norm: float
    epochs: int
    batch_size: int
    patience: int
    lr_decay: float
    min_lr: float
    checkpoint_every_steps: int
    eval_batch_size: int
    eval_users: int                  # users evaluated (valid during training, test in evaluate); 0 = all
    sampled_negatives: int           # protocol sampled_<1 + this>: the seed's 127
    ndcg_k: int                      # NDCG@ndcg_k (the early-stopping monitor)

    def validate(self) -> None:
        for key in ("embedding_dim", "num_layers", "num_heads", "ffn_dim", "max_len", "epochs", "batch_size",
                    "patience", "eval_batch_size", "sampled_negatives", "ndcg_k"):
            _positive(f"ranking.{key}", getattr(self, key))
        if self.embedding_dim % self.num_heads:
            raise ConfigError(f"ranking.num_heads: {self.num_heads} does not divide ranking.embedding_dim "
                              f"{self.embedding_dim}")
        _unit("ranking.dropout", self.dropout)
        if self.targets_per_user < 0 or self.negatives_per_positive < 0 or self.eval_users < 0:
            raise ConfigError("ranking.targets_per_user / negatives_per_positive / eval_users must be >= 0")
        if self.like_weight < 0 or self.like_pos_weight <= 0:
            raise ConfigError("ranking.like_weight must be >= 0 and ranking.like_pos_weight > 0")
        if self.lr <= 0:
            raise ConfigError(f"ranking.lr: {self.lr} must be > 0")
        if not 0 < self.lr_decay <= 1:
            raise ConfigError(f"ranking.lr_decay: {self.lr_decay} is not in (0, 1]")


@dataclass(frozen=True)
class RankingEvalParams:
    """What only tenrec_evaluate reads (beside ``ranking``): the retrieved_top_k protocol."""

    SECTION: ClassVar[str] = "ranking_eval"

    rerank_k: int                    # protocol retrieved_top_k: the first rerank_k ANN candidates (<= ann.top_k)

    def validate(self) -> None:
        _positive("ranking_eval.rerank_k", self.rerank_k)


@dataclass(frozen=True)
class EncoderScalingParams:
    """tenrec_encoder_scaling (timings only): the sequence lengths timed, Fastformer vs Transformer, at the
    ranker's width, heads and depth (``ranking.{embedding_dim,num_heads,ffn_dim,num_layers}``)."""

    SECTION: ClassVar[str] = "encoder_scaling"

    lengths: list[int]

    def validate(self) -> None:
        if not self.lengths:
            raise ConfigError("encoder_scaling.lengths: must list at least one length")
        for i, n in enumerate(self.lengths):
            _positive(f"encoder_scaling.lengths[{i}]", n)


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
