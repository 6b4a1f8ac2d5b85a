"""Typed params of the Avazu branch, one dataclass per params.yaml section (``SECTION`` = its key).

* ``avazu``     -- the data stages (download, normalize, split_valid, sample, vocab);
* ``optim``     -- the CTR step rule (Adam / SAM / Helen; :mod:`pipeline.ctr.optim`);
* ``train``     -- the CTR baseline's training run (which sources, the loop's knobs);
* ``llm``       -- the frozen LLM of LLM-CTR (avazu_llm_init) and how LLM-CTR talks to it (prompt, answers);
* ``llm_ctr``   -- the LLM-CTR model and its runtime (both phases and the evaluation);
* ``llm_train`` -- what both LLM-CTR phases share; ``llm_phase1`` / ``llm_phase2`` -- each phase's own.

The CTR model section ``ctr`` lives beside the model registry (:class:`pipeline.ctr.models.CtrParams`).
No defaults here: params.yaml holds them (with a comment per key). Valid ranges are declared on the
fields (``PosInt``, ``Decay``, ``Annotated[int, Range(...)]``: checked when params.yaml is parsed);
``validate`` makes the checks a range cannot (one key against another), raising ConfigError naming the
key. Checks that need files (a train source that was never encoded) are made where the files are read.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, ClassVar, Literal

from pipeline.core.errors import ConfigError
from pipeline.core.params import (
    Decay, NonNegFloat, OpenFrac, PosFloat, PosInt, Prob, Range, UserPath, check_ranges, check_subset,
)

AVAZU_SOURCES = ("x1", "x2", "x4")


@dataclass(frozen=True)
class AvazuSynthetic:
    """The embedded synthetic Avazu world (pipeline.ctr.synthetic)."""

    rows: Annotated[int, Range(ge=1000)]   # events in the world (all three layouts are re-splits of these rows)
    mean_ctr: OpenFrac    # target mean click probability of the planted teacher
    rank: PosInt          # rank of the planted pairwise interactions
    temperature: PosFloat  # scales the teacher logit around its bias; larger = more separable


@dataclass(frozen=True)
class AvazuSplitValid:
    sources: list[str]    # sources whose published layout has no valid split (reczoo: only x2)
    frac: OpenFrac        # share of train that becomes valid (click-stratified)


@dataclass(frozen=True)
class AvazuSample:
    sources: list[str]
    frac: OpenFrac


@dataclass(frozen=True)
class AvazuParams:
    SECTION: ClassVar[str] = "avazu"

    source: Literal["synthetic", "hf", "local"]
    sources: list[str]
    local_dir: UserPath
    hf_revision: str
    layouts: UserPath     # declared column layouts (a YAML file; relative to the repository root)
    batch_rows: PosInt
    synthetic: AvazuSynthetic
    split_valid: AvazuSplitValid
    sample: AvazuSample
    min_count: PosInt     # tokens seen fewer times in train -> OOV (1 = keep every token)
    align: bool           # avazu_align: map x1 / x2 ids onto x4's raw tokens (false: namespaced ids, as published)
    verify_md5: bool      # download: refuse CSVs whose md5 differs from reczoo's published one (false: own copies)
    out_of_window: Literal["error", "warn"]   # normalize: an hour outside the layout's declared date window

    def validate(self) -> None:
        check_subset("avazu.sources", self.sources, AVAZU_SOURCES)
        if not self.sources:
            raise ConfigError("avazu.sources: must name at least one of x1, x2, x4")
        check_subset("avazu.split_valid.sources", self.split_valid.sources, self.sources, "avazu.sources")
        check_subset("avazu.sample.sources", self.sample.sources, self.sources, "avazu.sources")
        if self.source == "local" and not self.local_dir:
            raise ConfigError("avazu.local_dir: must be set when avazu.source is 'local'")


@dataclass(frozen=True)
class OptimParams:
    SECTION: ClassVar[str] = "optim"
    HELEN_VARIANTS: ClassVar[tuple[str, ...]] = ("release", "recdag")   # = helen_variant's Literal

    name: Literal["adam", "sam", "helen"]
    rho: NonNegFloat           # sam, helen: perturbation radius
    bound: Prob                # helen: lower clamp of the frequency scale (count / max_count in [0, 1])
    net_pert: bool             # helen: perturb dense weights too
    helen_variant: Literal["release", "recdag"]   # helen: the released update | ours (see pipeline.ctr.optim)
    lr_embed: PosFloat
    lr_net: PosFloat
    clip_norm: Annotated[float, Range(ge=0, note="0 = off")]   # adam path: global grad-norm clipping (0 = off)

    def validate(self) -> None:
        check_ranges(self, self.SECTION)             # a copy with the Helen study's --rho too (helen-run)
        if self.helen_variant not in self.HELEN_VARIANTS:
            raise ConfigError(f"optim.helen_variant: '{self.helen_variant}' is not one of "
                              f"{list(self.HELEN_VARIANTS)}")


@dataclass(frozen=True)
class TrainParams:
    """The CTR baseline's training run (avazu_train_baseline, avazu_compare_optimizers): which encoded
    sources it trains on and the one loop's knobs (pipeline.core.train.LoopConfig)."""

    SECTION: ClassVar[str] = "train"

    sources: list[str]         # encoded datasets whose train splits are concatenated (the seed: x4)
    epochs: PosInt
    batch_size: PosInt
    eval_every_steps: Annotated[int, Range(ge=0, note="0 = once per epoch")]
    monitor: Literal["auc", "auc_minus_logloss"]
    patience: PosInt
    lr_decay: Decay
    min_lr: NonNegFloat
    embedding_regularizer: NonNegFloat   # 0 = off
    net_regularizer: NonNegFloat         # 0 = off
    checkpoint_every_steps: Annotated[int, Range(ge=0, note="0 = only at evaluations")]
    eval_batch_size: PosInt

    def validate(self) -> None:
        if not self.sources:
            raise ConfigError("train.sources: must name at least one source to train on")
        check_subset("train.sources", self.sources, AVAZU_SOURCES)


@dataclass(frozen=True)
class LlmTiny:
    """The embedded default LLM (``llm.source: tiny``): a randomly initialised Qwen3 of these shapes and a
    byte-level BPE tokenizer trained on the prompt (pipeline.ctr.llm_init)."""

    hidden_size: PosInt
    intermediate_size: PosInt
    num_layers: PosInt
    num_heads: PosInt
    num_kv_heads: PosInt             # must divide num_heads
    head_dim: PosInt
    vocab_size: Annotated[int, Range(ge=300, note="256 byte tokens, special tokens and some merges")]
                                     # BPE target size: 256 bytes + merges + special tokens
    max_position_embeddings: PosInt


@dataclass(frozen=True)
class LlmParams:
    """The frozen LLM (avazu_llm_init builds/fetches it) and the text LLM-CTR feeds it."""

    SECTION: ClassVar[str] = "llm"

    source: Literal["tiny", "hf", "local", "smollm2"]
    name: str                        # hf: the model repository (Qwen/Qwen3-0.6B)
    revision: str                    # hf: branch, tag or commit
    local_path: UserPath             # local: a directory holding an HF causal LM and its tokenizer
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
        if t.num_heads % t.num_kv_heads:
            raise ConfigError(f"llm.tiny.num_kv_heads: {t.num_kv_heads} must divide llm.tiny.num_heads "
                              f"({t.num_heads})")
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

    projector_hidden: PosInt         # hidden width of the per-field projector MLP
    prompt_cache: bool               # run the prompt once and reuse its KV cache
    dtype: Literal["auto", "float32", "bfloat16"]
    device: Literal["auto", "cpu", "cuda"]
    eval_batch_size: PosInt          # rows per scoring batch (validation and evaluation)
    readout: Literal["affine", "seed"] = "affine"   # seed: σ(l_yes − l_no) | affine: σ(e^s (l_yes − l_no − c) + b)
    projector: Literal["per_field", "shared"] = "per_field"   # per_field: one MLP per field | shared: the seed's


@dataclass(frozen=True)
class LlmTrainParams:
    """What both LLM-CTR phases share: the sources trained on, in order, and the loop's knobs."""

    SECTION: ClassVar[str] = "llm_train"

    sources: list[str]               # encoded datasets trained on in order (one fit each)
    epochs: PosInt                   # per train source
    batch_size: PosInt
    eval_every_steps: Annotated[int, Range(ge=0, note="0 = once per epoch")]
    patience: PosInt
    lr_decay: Decay
    min_lr: NonNegFloat
    clip_norm: Annotated[float, Range(ge=0, note="0 = off")]
    checkpoint_every_steps: Annotated[int, Range(ge=0, note="0 = only at validations")]

    def validate(self) -> None:
        if not self.sources:
            raise ConfigError("llm_train.sources: must name at least one dataset")
        if len(set(self.sources)) != len(self.sources):
            raise ConfigError(f"llm_train.sources: duplicate entries in {self.sources}")


@dataclass(frozen=True)
class LlmPhase1Params:
    """Phase 1: the projector only (baseline embeddings and encoder frozen)."""

    SECTION: ClassVar[str] = "llm_phase1"
    lr: PosFloat                     # Adam learning rate of the trainable parts of this phase


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
