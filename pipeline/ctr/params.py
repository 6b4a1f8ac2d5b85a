"""Typed params of the Avazu branch, one dataclass per params.yaml section (``SECTION`` = its key).

* ``avazu``     -- the data stages (download, normalize, split_valid, sample, vocab);
* ``optim``     -- the CTR step rule (Adam / SAM / Helen; :mod:`pipeline.ctr.optim`);
* ``train``     -- the CTR baseline's training run (which sources, the loop's knobs);
* ``llm``       -- the frozen LLM of LLM-CTR (avazu_llm_init) and how LLM-CTR talks to it (prompt, answers);
* ``llm_ctr``   -- the LLM-CTR model and its runtime (both phases and the evaluation);
* ``llm_train`` -- what both LLM-CTR phases share; ``llm_phase1`` / ``llm_phase2`` -- each phase's own.

The CTR model section ``ctr`` lives beside the model registry (:class:`pipeline.ctr.models.CtrParams`).
No defaults here: params.yaml holds them (with a comment per key). ``validate`` raises ConfigError naming
the key. Checks that need files (a train source that was never encoded) are made where the files are read.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Literal

from pipeline.core.errors import ConfigError
from pipeline.core.params import check_subset

AVAZU_SOURCES = ("x1", "x2", "x4")


def _at_least(key: str, value, low) -> None:
    if value < low:
        raise ConfigError(f"{key}: {value} must be >= {low}")


@dataclass(frozen=True)
class AvazuSynthetic:
    """The embedded synthetic Avazu world (pipeline.ctr.synthetic)."""

    rows: int             # events in the world (all three layouts are re-splits of these rows)
    mean_ctr: float       # target mean click probability of the planted teacher
    rank: int             # rank of the planted pairwise interactions
    temperature: float    # scales the teacher logit around its bias; larger = more separable


@dataclass(frozen=True)
class AvazuSplitValid:
    sources: list[str]    # sources whose published layout has no valid split (reczoo: only x2)
    frac: float           # share of train that becomes valid (click-stratified)


@dataclass(frozen=True)
class AvazuSample:
    sources: list[str]
    frac: float


@dataclass(frozen=True)
class AvazuParams:
    SECTION: ClassVar[str] = "avazu"

    source: Literal["synthetic", "hf", "local"]
    sources: list[str]
    local_dir: str
    hf_revision: str
    layouts: str
    batch_rows: int
    synthetic: AvazuSynthetic
    split_valid: AvazuSplitValid
    sample: AvazuSample
    min_count: int
    align: bool           # avazu_align: map x1 / x2 ids onto x4's raw tokens (false: namespaced ids, as published)

    def validate(self) -> None:
        check_subset("avazu.sources", self.sources, AVAZU_SOURCES)
        if not self.sources:
            raise ConfigError("avazu.sources: must name at least one of x1, x2, x4")
        check_subset("avazu.split_valid.sources", self.split_valid.sources, self.sources, "avazu.sources")
        check_subset("avazu.sample.sources", self.sample.sources, self.sources, "avazu.sources")
        for key, frac in (("avazu.split_valid.frac", self.split_valid.frac), ("avazu.sample.frac", self.sample.frac)):
            if not 0.0 < frac < 1.0:
                raise ConfigError(f"{key}: {frac} is not in (0, 1)")
        _at_least("avazu.min_count", self.min_count, 1)
        _at_least("avazu.batch_rows", self.batch_rows, 1)
        if self.synthetic.rows < 1000:
            raise ConfigError(f"avazu.synthetic.rows: {self.synthetic.rows} is too small (>= 1000)")
        if not 0.0 < self.synthetic.mean_ctr < 1.0:
            raise ConfigError(f"avazu.synthetic.mean_ctr: {self.synthetic.mean_ctr} is not in (0, 1)")
        if self.source == "local" and not self.local_dir:
            raise ConfigError("avazu.local_dir: must be set when avazu.source is 'local'")


@dataclass(frozen=True)
class OptimParams:
    SECTION: ClassVar[str] = "optim"
    HELEN_VARIANTS: ClassVar[tuple[str, ...]] = ("release", "recdag")   # = helen_variant's Literal

    name: Literal["adam", "sam", "helen"]
    rho: float                 # sam, helen: perturbation radius
    bound: float               # helen: lower clamp of the frequency scale
    net_pert: bool             # helen: perturb dense weights too
    helen_variant: Literal["release", "recdag"]   # helen: the released update | ours (see pipeline.ctr.optim)
    lr_embed: float
    lr_net: float
    clip_norm: float           # adam path: global grad-norm clipping (0 = off)

    def validate(self) -> None:
        if self.rho < 0 or not 0.0 <= self.bound <= 1.0:
            raise ConfigError("optim.rho must be >= 0 and optim.bound in [0, 1]")
        if self.helen_variant not in self.HELEN_VARIANTS:
            raise ConfigError(f"optim.helen_variant: '{self.helen_variant}' is not one of "
                              f"{list(self.HELEN_VARIANTS)}")


@dataclass(frozen=True)
class TrainParams:
    """The CTR baseline's training run (avazu_train_baseline, avazu_compare_optimizers): which encoded
    sources it trains on and the one loop's knobs (pipeline.core.train.LoopConfig)."""

    SECTION: ClassVar[str] = "train"

    sources: list[str]         # encoded datasets whose train splits are concatenated (the seed: x4)
    epochs: int
    batch_size: int
    eval_every_steps: int
    monitor: Literal["auc", "auc_minus_logloss"]
    patience: int
    lr_decay: float
    min_lr: float
    embedding_regularizer: float
    net_regularizer: float
    checkpoint_every_steps: int
    eval_batch_size: int

    def validate(self) -> None:
        if not self.sources:
            raise ConfigError("train.sources: must name at least one source to train on")
        check_subset("train.sources", self.sources, AVAZU_SOURCES)
        for key in ("epochs", "batch_size", "patience", "eval_batch_size"):
            _at_least(f"train.{key}", getattr(self, key), 1)


@dataclass(frozen=True)
class LlmTiny:
    """The embedded default LLM (``llm.source: tiny``): a randomly initialised Qwen3 of these shapes and a
    byte-level BPE tokenizer trained on the prompt (pipeline.ctr.llm_init)."""

    hidden_size: int
    intermediate_size: int
    num_layers: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    vocab_size: int                  # BPE target size: 256 bytes + merges + special tokens
    max_position_embeddings: int


@dataclass(frozen=True)
class LlmParams:
    """The frozen LLM (avazu_llm_init builds/fetches it) and the text LLM-CTR feeds it."""

    SECTION: ClassVar[str] = "llm"

    source: Literal["tiny", "hf", "local", "smollm2"]
    name: str                        # hf: the model repository (Qwen/Qwen3-0.6B)
    revision: str                    # hf: branch, tag or commit
    local_path: str                  # local: a directory holding an HF causal LM and its tokenizer
    tiny: LlmTiny
    prompt: str                      # the text before the soft tokens
    answer_tokens: list[str]         # [no-click word, click word]; each must be exactly one token
    random_init: bool = False        # hf / local / smollm2: same architecture + tokenizer, fresh seeded weights

    def validate(self) -> None:
        if self.source == "local" and not self.local_path:
            raise ConfigError("llm.local_path: must be set when llm.source is 'local'")
        if self.source == "hf" and not self.name:
            raise ConfigError("llm.name: must name a Hugging Face model when llm.source is 'hf'")
        t = self.tiny
        for key in ("hidden_size", "intermediate_size", "num_layers", "num_heads", "num_kv_heads", "head_dim",
                    "max_position_embeddings"):
            _at_least(f"llm.tiny.{key}", getattr(t, key), 1)
        if t.num_heads % t.num_kv_heads:
            raise ConfigError(f"llm.tiny.num_kv_heads: {t.num_kv_heads} must divide llm.tiny.num_heads "
                              f"({t.num_heads})")
        if t.vocab_size < 300:
            raise ConfigError(f"llm.tiny.vocab_size: {t.vocab_size} must be >= 300 (256 byte tokens, "
                              "special tokens and some merges)")
        if len(self.answer_tokens) != 2:
            raise ConfigError(f"llm.answer_tokens: expected two words [no-click, click], got {self.answer_tokens}")
        if self.answer_tokens[0] == self.answer_tokens[1]:
            raise ConfigError(f"llm.answer_tokens: the two answers are the same ({self.answer_tokens[0]!r})")
        if any(not a for a in self.answer_tokens):
            raise ConfigError("llm.answer_tokens: an answer word is empty")


@dataclass(frozen=True)
class LlmCtrParams:
    """The LLM-CTR model built on the frozen LLM, and where/how it runs (phases and evaluation)."""

    SECTION: ClassVar[str] = "llm_ctr"

    projector_hidden: int            # hidden width of the per-field projector MLP
    prompt_cache: bool               # run the prompt once and reuse its KV cache
    dtype: Literal["auto", "float32", "bfloat16"]
    device: Literal["auto", "cpu", "cuda"]
    eval_batch_size: int             # rows per scoring batch (validation and evaluation)
    readout: Literal["affine", "seed"] = "affine"   # seed: σ(l_yes − l_no) | affine: σ(e^s (l_yes − l_no − c) + b)
    projector: Literal["per_field", "shared"] = "per_field"   # per_field: one MLP per field | shared: the seed's

    def validate(self) -> None:
        _at_least("llm_ctr.projector_hidden", self.projector_hidden, 1)
        _at_least("llm_ctr.eval_batch_size", self.eval_batch_size, 1)


@dataclass(frozen=True)
class LlmTrainParams:
    """What both LLM-CTR phases share: the sources trained on, in order, and the loop's knobs."""

    SECTION: ClassVar[str] = "llm_train"

    sources: list[str]               # encoded datasets trained on in order (one fit each)
    epochs: int                      # per train source
    batch_size: int
    eval_every_steps: int            # 0 = once per epoch
    patience: int
    lr_decay: float
    min_lr: float
    clip_norm: float
    checkpoint_every_steps: int

    def validate(self) -> None:
        for key in ("epochs", "batch_size", "patience"):
            _at_least(f"llm_train.{key}", getattr(self, key), 1)
        for key in ("eval_every_steps", "checkpoint_every_steps"):
            _at_least(f"llm_train.{key}", getattr(self, key), 0)
        if not self.sources:
            raise ConfigError("llm_train.sources: must name at least one dataset")
        if len(set(self.sources)) != len(self.sources):
            raise ConfigError(f"llm_train.sources: duplicate entries in {self.sources}")
        if not 0.0 < self.lr_decay <= 1.0:
            raise ConfigError(f"llm_train.lr_decay: {self.lr_decay} is not in (0, 1]")
        if self.clip_norm < 0 or self.min_lr < 0:
            raise ConfigError("llm_train.clip_norm and llm_train.min_lr must be >= 0")


@dataclass(frozen=True)
class LlmPhase1Params:
    """Phase 1: the projector only (baseline embeddings and encoder frozen)."""

    SECTION: ClassVar[str] = "llm_phase1"
    lr: float                        # Adam learning rate of the trainable parts of this phase

    def validate(self) -> None:
        if not self.lr > 0:
            raise ConfigError(f"{self.SECTION}.lr: {self.lr} must be > 0")


@dataclass(frozen=True)
class LlmPhase2Params(LlmPhase1Params):
    """Phase 2: encoder + projector, from phase 1's best projector."""

    SECTION: ClassVar[str] = "llm_phase2"


@dataclass(frozen=True)
class LlmEvalParams:
    SECTION: ClassVar[str] = "llm_eval"

    sources: list[str]               # avazu sources whose test split avazu_evaluate_x4 scores

    def validate(self) -> None:
        if not self.sources:
            raise ConfigError("llm_eval.sources: must name at least one dataset")
        check_subset("llm_eval.sources", self.sources, AVAZU_SOURCES)


LLM_PHASES = {1: LlmPhase1Params, 2: LlmPhase2Params}
