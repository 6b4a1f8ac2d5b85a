"""Typed params of the LLM-CTR stages (section ``llm`` of params.yaml), loaded by pipeline.core.config.

No defaults here: params.yaml holds them (with a comment per key). ``validate`` raises ConfigError naming
the key. Checks that need other sections or files (a train source that was never encoded, an eval source not
in ``avazu.sources``) are made by the stages, which see them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from pipeline.core.errors import ConfigError


def _positive(key: str, value) -> None:
    if value < 1:
        raise ConfigError(f"llm.{key}: {value} must be >= 1")


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
class LlmPhase:
    lr: float                        # Adam learning rate of the trainable parts of this phase


@dataclass(frozen=True)
class LlmParams:
    source: Literal["tiny", "hf", "local"]
    name: str                        # hf: the model repository (Qwen/Qwen3-0.6B)
    revision: str                    # hf: branch, tag or commit
    local_path: str                  # local: a directory holding an HF causal LM and its tokenizer
    tiny: LlmTiny
    prompt: str                      # the text before the soft tokens
    answer_tokens: list[str]         # [no-click word, click word]; each must be exactly one token
    prompt_cache: bool               # run the prompt once and reuse its KV cache
    dtype: Literal["auto", "float32", "bfloat16"]
    device: Literal["auto", "cpu", "cuda"]
    projector_hidden: int            # hidden width of the per-field projector MLP
    train_sources: list[str]         # encoded datasets trained on in order (one fit each)
    eval_sources: list[str]          # avazu sources whose test split evaluate_x4 scores
    epochs: int                      # per train source
    batch_size: int
    eval_batch_size: int
    eval_every_steps: int            # 0 = once per epoch
    patience: int
    lr_decay: float
    min_lr: float
    clip_norm: float
    checkpoint_every_steps: int
    phase1: LlmPhase
    phase2: LlmPhase

    def validate(self) -> None:
        if self.source == "local" and not self.local_path:
            raise ConfigError("llm.local_path: must be set when llm.source is 'local'")
        if self.source == "hf" and not self.name:
            raise ConfigError("llm.name: must name a Hugging Face model when llm.source is 'hf'")
        t = self.tiny
        for key, v in (("hidden_size", t.hidden_size), ("intermediate_size", t.intermediate_size),
                       ("num_layers", t.num_layers), ("num_heads", t.num_heads),
                       ("num_kv_heads", t.num_kv_heads), ("head_dim", t.head_dim),
                       ("max_position_embeddings", t.max_position_embeddings)):
            _positive(f"tiny.{key}", v)
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
        for key, v in (("projector_hidden", self.projector_hidden), ("epochs", self.epochs),
                       ("batch_size", self.batch_size), ("eval_batch_size", self.eval_batch_size),
                       ("patience", self.patience)):
            _positive(key, v)
        for key, v in (("eval_every_steps", self.eval_every_steps),
                       ("checkpoint_every_steps", self.checkpoint_every_steps)):
            if v < 0:
                raise ConfigError(f"llm.{key}: {v} must be >= 0")
        for key, lst in (("train_sources", self.train_sources), ("eval_sources", self.eval_sources)):
            if not lst:
                raise ConfigError(f"llm.{key}: must name at least one dataset")
            if len(set(lst)) != len(lst):
                raise ConfigError(f"llm.{key}: duplicate entries in {lst}")
        if not 0.0 < self.lr_decay <= 1.0:
            raise ConfigError(f"llm.lr_decay: {self.lr_decay} is not in (0, 1]")
        if self.clip_norm < 0 or self.min_lr < 0:
            raise ConfigError("llm.clip_norm and llm.min_lr must be >= 0")
        for key, ph in (("phase1", self.phase1), ("phase2", self.phase2)):
            if not ph.lr > 0:
                raise ConfigError(f"llm.{key}.lr: {ph.lr} must be > 0")
