"""LLM-CTR: a frozen causal LLM reads one projected soft token per field and answers "0" or "1".

::

    ids [B, F] ─► baseline FeatureEmbedding (frozen) ─► E [B, F, D]
               ─► baseline encoder, FieldGate or GEN (frozen in phase 1, trained in phase 2) ─► E' [B, F, D]
               ─► FieldProjector, one MLP per field: Linear(D, P) → GELU → Linear(P, H) → LayerNorm(H)
                  (or SharedProjector, the seed's: one such MLP for every field; llm_ctr.projector)
               ─► soft tokens S [B, F, H]            (H = the LLM's hidden size, read from its config)
    inputs_embeds = [ prompt token embeddings [P_t, H] ; S ]  ─► frozen causal LLM (sdpa, logits_to_keep=1)
               ─► logits of the last position at the two answer tokens (l_no, l_yes), e.g. "0" / "1"
               ─► readout: seed   p(click) = softmax(l_no, l_yes)[1] = σ(l_yes − l_no)
                           affine σ(exp(s) · (l_yes − l_no − c) + b)      (llm_ctr.readout, default affine)

With ``readout: seed`` (the seed's) the module returns ``d = l_yes − l_no`` as its logit, so the shared
loop's BCE-with-logits on it *is* the 2-way softmax cross-entropy over the two answer logits
(σ(d) = e^{l_yes} / (e^{l_no} + e^{l_yes})); ``tests/test_llm_model.py`` checks the identity numerically.

**The affine readout** (recdag's, labelled; :class:`AnswerReadout`) adds two trained scalars: a log-scale
``s`` and a bias ``b`` on the answer margin, the centre ``c`` a fixed buffer. Why: the margin's dynamic
range is the LLM's, not the task's. On the embedded random Qwen3 it is tiny -- std 0.039 over the rows of
x1_sample20 at initialisation, and 0.005 after phase 1 with the seed's readout, so every row gets almost
the same probability: AUC is learnt, logloss stays worse than the constant base-rate predictor's
(measured; README "LLM-CTR"). A projector behind a frozen LayerNorm-ed LLM cannot widen that range in a
few hundred Adam steps. The affine readout is initialised from the data before phase 1
(:meth:`AnswerReadout.init_from`: ``c`` = the margins' mean and ``exp(s)`` = 1/std on the first rows of
the first train source, ``b`` = logit of that source's click rate), so training starts at the base rate
with unit-variance logits; ``exp(s)`` keeps the scale positive, so the ranking is the LLM's margin's, only
calibrated. It is a temperature + bias, the standard post-hoc calibration (Guo et al. 2017, "On
Calibration of Modern Neural Networks"), trained jointly instead of post hoc.

**Prompt cache.** The LLM is frozen and the prompt fixed, so the prompt's keys/values are the same for every
row: :class:`LlmCtr` runs the prompt once (no grad), keeps its per-layer KV tensors and its token
embeddings, and for each batch builds a *fresh* ``DynamicCache`` from them, expanded to the batch size. The
cache's first update concatenates onto these tensors, which copies them, and the cache object itself is
thrown away after the call, so the model's in-place cache growth cannot leak from one step into the next or
into the stored prompt state (tested). Only the F soft tokens then run through the LLM (queries F, keys
P_t + F) instead of P_t + F tokens. With ``prompt_cache=False`` the prompt's token embeddings are
concatenated in front of the soft tokens and the whole sequence runs every time: same logits (fp32,
tested to 1e-5), slower.

**What is saved.** Only the trainable parts are registered as sub-modules: the projector, and the encoder
when it is trained (phase 2). The frozen baseline embedding, the frozen encoder of phase 1 and the LLM are
held outside the module tree (:class:`_Frozen`), so ``state_dict()`` — hence every checkpoint of the shared
loop and the stage outputs — holds the trainable parameters only, never the LLM. The model is built on its
device and dtype once; the frozen parts stay in eval mode.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from pipeline.core.errors import ConfigError, DataError
from pipeline.core.io import load_weights
from pipeline.ctr.llm_init import LlmBundle, load_bundle  # noqa: F401 - re-exported
from pipeline.ctr.layers import FeatureEmbedding, FieldGate, GenEncoder
from pipeline.ctr.models import CTRModel, build_model

log = logging.getLogger(__name__)

FieldEncoder = FieldGate | GenEncoder
LLM_ENCODERS = ("gated", "gen")     # ctr.deepfm.encoder values whose baseline LLM-CTR can reuse
READOUTS = ("affine", "seed")        # llm_ctr.readout


# ------------------------------------------------------------------------------------------------ projector


class FieldProjector(nn.Module):
    """One MLP per field, batched: ``[B, F, D] -> [B, F, H]``.

    Field f: ``LayerNorm_f(W2_f · GELU(W1_f · e_f + b1_f) + b2_f)`` with W1_f: D→P, W2_f: P→H and a LayerNorm
    over H with its own gain/bias per field. Linear weights are Xavier-normal, biases zero. The LayerNorm
    gain starts at ``out_scale`` — the RMS of the LLM's input token embeddings — so soft tokens enter the
    LLM at the scale of real tokens (a unit-RMS soft token next to 0.02-RMS word embeddings would swamp the
    prompt in the first attention layer).
    """

    def __init__(self, num_fields: int, in_dim: int, hidden: int, out_dim: int, out_scale: float = 1.0):
        super().__init__()
        self.num_fields, self.in_dim, self.hidden, self.out_dim = num_fields, in_dim, hidden, out_dim
        self.w1 = nn.Parameter(torch.empty(num_fields, in_dim, hidden))
        self.b1 = nn.Parameter(torch.zeros(num_fields, hidden))
        self.w2 = nn.Parameter(torch.empty(num_fields, hidden, out_dim))
        self.b2 = nn.Parameter(torch.zeros(num_fields, out_dim))
        self.ln_weight = nn.Parameter(torch.full((num_fields, out_dim), float(out_scale)))
        self.ln_bias = nn.Parameter(torch.zeros(num_fields, out_dim))
        for w in (self.w1, self.w2):
            fan_in, fan_out = w.shape[1], w.shape[2]
            nn.init.normal_(w, 0.0, math.sqrt(2.0 / (fan_in + fan_out)))

    def forward(self, e: torch.Tensor) -> torch.Tensor:
        h = F.gelu(torch.einsum("bfd,fdp->bfp", e, self.w1) + self.b1)
        h = torch.einsum("bfp,fph->bfh", h, self.w2) + self.b2
        return F.layer_norm(h, (self.out_dim,)) * self.ln_weight + self.ln_bias

    def extra_repr(self) -> str:
        return f"fields={self.num_fields}, {self.in_dim} -> {self.hidden} -> {self.out_dim}"


class SharedProjector(nn.Module):
    """The seed's projector: **one** MLP applied to every field's vector, ``[B, F, D] -> [B, F, H]``:
    ``LayerNorm(W2 · GELU(W1 · e_f + b1) + b2)`` with the same W1: D→P, W2: P→H for all fields (the seed uses
    P = 2048). Labelled departure: the output LayerNorm with its gain at the LLM's embedding RMS is
    recdag's (as in :class:`FieldProjector`), so both projectors hand the LLM tokens at its own scale; the
    parameter names match :class:`FieldProjector`'s without the field axis."""

    def __init__(self, num_fields: int, in_dim: int, hidden: int, out_dim: int, out_scale: float = 1.0):
        super().__init__()
        self.num_fields, self.in_dim, self.hidden, self.out_dim = num_fields, in_dim, hidden, out_dim
        self.w1 = nn.Parameter(torch.empty(in_dim, hidden))
        self.b1 = nn.Parameter(torch.zeros(hidden))
        self.w2 = nn.Parameter(torch.empty(hidden, out_dim))
        self.b2 = nn.Parameter(torch.zeros(out_dim))
        self.ln_weight = nn.Parameter(torch.full((out_dim,), float(out_scale)))
        self.ln_bias = nn.Parameter(torch.zeros(out_dim))
        for w in (self.w1, self.w2):
            nn.init.normal_(w, 0.0, math.sqrt(2.0 / (w.shape[0] + w.shape[1])))

    def forward(self, e: torch.Tensor) -> torch.Tensor:
        h = F.gelu(e @ self.w1 + self.b1) @ self.w2 + self.b2
        return F.layer_norm(h, (self.out_dim,)) * self.ln_weight + self.ln_bias

    def extra_repr(self) -> str:
        return f"shared by {self.num_fields} fields, {self.in_dim} -> {self.hidden} -> {self.out_dim}"


PROJECTORS = {"per_field": FieldProjector, "shared": SharedProjector}      # llm_ctr.projector


# ------------------------------------------------------------------------------------------------ readout


class AnswerReadout(nn.Module):
    """The click logit from the answer margin ``d = l_yes − l_no``: ``seed`` returns ``d`` (the seed's
    2-way softmax), ``affine`` returns ``exp(log_scale) · (d − center) + bias`` (see the module docstring).
    ``seed`` has no parameters, so its ``state_dict`` is empty and a seed-readout model saves exactly what
    it did before the option existed."""

    def __init__(self, kind: str = "seed"):
        super().__init__()
        if kind not in READOUTS:
            raise ConfigError(f"llm_ctr.readout: '{kind}' is not one of {list(READOUTS)}")
        self.kind = kind
        if kind == "affine":
            self.log_scale = nn.Parameter(torch.zeros(()))
            self.bias = nn.Parameter(torch.zeros(()))
            self.register_buffer("center", torch.zeros(()))

    @torch.no_grad()
    def init_from(self, margins: torch.Tensor, click_rate: float) -> None:
        """Centre / scale the margins ``[N]`` to mean 0, std 1 and put the bias at logit(click_rate)."""
        if self.kind != "affine":
            return
        m = margins.detach().float()
        std = float(m.std()) if m.numel() > 1 else 0.0
        rate = min(max(float(click_rate), 1e-4), 1 - 1e-4)
        self.center.fill_(float(m.mean()) if m.numel() else 0.0)
        self.log_scale.fill_(-math.log(std) if std > 1e-8 else 0.0)
        self.bias.fill_(math.log(rate / (1 - rate)))

    def forward(self, d: torch.Tensor) -> torch.Tensor:
        if self.kind == "seed":
            return d
        return self.log_scale.exp() * (d - self.center) + self.bias

    def extra_repr(self) -> str:
        return f"kind={self.kind}"


# ------------------------------------------------------------------------------------------------ model


class _Frozen:
    """Plain holder (not an nn.Module) for the parts that must not be registered: they are never in
    ``state_dict()``/``parameters()`` of the owning module."""

    def __init__(self, **parts):
        self.__dict__.update(parts)


class LlmCtr(nn.Module):
    """Baseline embeddings → encoder → projector → [prompt ; soft tokens] → frozen LLM → l_yes − l_no.

    ``train_encoder`` decides whether the encoder is a registered, trainable sub-module (phase 2) or a
    frozen part (phase 1). ``prompt_cache`` switches the KV-cache reuse (same logits either way).
    """

    def __init__(self, embedding: FeatureEmbedding, encoder: FieldEncoder, projector: nn.Module, llm,
                 prompt_ids: list[int], answer_ids: list[int], *, train_encoder: bool, prompt_cache: bool,
                 readout: str = "seed"):
        super().__init__()
        params = list(llm.parameters())
        self.device, self.llm_dtype = params[0].device, params[0].dtype
        for p in (*params, *embedding.parameters()):
            p.requires_grad_(False)
        embedding.to(self.device).eval()
        encoder.to(self.device)
        self.projector = projector.to(self.device)
        self.readout = AnswerReadout(readout).to(self.device)
        self.train_encoder = bool(train_encoder)
        if self.train_encoder:
            self.encoder = encoder
        else:
            for p in encoder.parameters():
                p.requires_grad_(False)
            encoder.eval()
        self.frozen = _Frozen(embedding=embedding, encoder=None if train_encoder else encoder, llm=llm.eval())
        self.prompt_cache = bool(prompt_cache)
        self.register_buffer("prompt_ids", torch.tensor(prompt_ids, dtype=torch.long, device=self.device),
                             persistent=False)
        self.register_buffer("answer_ids", torch.tensor(answer_ids, dtype=torch.long, device=self.device),
                             persistent=False)
        self._prompt_state: tuple | None = None

    # -- parts ----------------------------------------------------------------------------------------
    @property
    def llm(self):
        return self.frozen.llm

    @property
    def embedding(self) -> FeatureEmbedding:
        return self.frozen.embedding

    @property
    def field_encoder(self) -> FieldEncoder:
        return self.encoder if self.train_encoder else self.frozen.encoder

    @property
    def num_prompt_tokens(self) -> int:
        return int(self.prompt_ids.numel())

    def trainable_parameters(self) -> list[nn.Parameter]:
        return [p for p in self.parameters() if p.requires_grad]

    # -- prompt state ---------------------------------------------------------------------------------
    @torch.no_grad()
    def prompt_state(self):
        """(token embeddings [1, P, H], per-layer (K, V) [1, kv_heads, P, head_dim]) of the prompt, computed
        once. The tensors are never handed to the LLM's cache directly (see :meth:`_fresh_cache`)."""
        if self._prompt_state is None:
            emb = self.llm.get_input_embeddings()(self.prompt_ids[None])
            kv = None
            if self.num_prompt_tokens:
                out = self.llm(input_ids=self.prompt_ids[None], use_cache=True, logits_to_keep=1)
                kv = [(layer.keys.detach().clone(), layer.values.detach().clone())
                      for layer in out.past_key_values.layers]
            self._prompt_state = (emb, kv)
        return self._prompt_state

    def _fresh_cache(self, batch: int):
        """A new DynamicCache holding the prompt's KV expanded to ``batch`` rows; building it concatenates
        (copies) them, so nothing the LLM does to the cache reaches the stored prompt state."""
        from transformers import DynamicCache

        _, kv = self.prompt_state()
        return DynamicCache(ddp_cache_data=[(k.expand(batch, -1, -1, -1), v.expand(batch, -1, -1, -1))
                                            for k, v in kv], config=self.llm.config)

    # -- forward --------------------------------------------------------------------------------------
    def soft_tokens(self, x: torch.Tensor) -> torch.Tensor:
        x = x.to(self.device, torch.long, non_blocking=True)
        with torch.no_grad():
            e = self.embedding(x)
        enc = self.field_encoder
        if self.train_encoder:
            e = enc(e)
        else:
            with torch.no_grad():
                e = enc(e)
        return self.projector(e).to(self.llm_dtype)

    def answer_logits(self, x: torch.Tensor, *, use_cache: bool | None = None) -> torch.Tensor:
        """The two answer logits ``[B, 2]`` (no-click, click) at the last position, fp32."""
        use_cache = self.prompt_cache if use_cache is None else use_cache
        soft = self.soft_tokens(x)
        b = soft.shape[0]
        if use_cache and self.num_prompt_tokens:
            out = self.llm(inputs_embeds=soft, past_key_values=self._fresh_cache(b), use_cache=True,
                           logits_to_keep=1)
        else:
            emb, _ = self.prompt_state()
            seq = torch.cat([emb.expand(b, -1, -1), soft], dim=1) if self.num_prompt_tokens else soft
            out = self.llm(inputs_embeds=seq, use_cache=False, logits_to_keep=1)
        return out.logits[:, -1].index_select(-1, self.answer_ids).float()

    def margin(self, x: torch.Tensor) -> torch.Tensor:
        """``l_yes − l_no`` [B], the answer margin before the readout."""
        two = self.answer_logits(x)
        return two[:, 1] - two[:, 0]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The click logit: the readout of the answer margin (``seed``: the margin itself, so BCE-with-logits
        on it equals the 2-way softmax cross-entropy over the answer logits)."""
        return self.readout(self.margin(x))

    @torch.no_grad()
    def init_readout(self, x: torch.Tensor, click_rate: float, batch: int = 4096) -> None:
        """Initialise an affine readout from the margins of the rows ``x`` (a no-op for ``seed``)."""
        if self.readout.kind == "seed":
            return
        was = self.training
        self.eval()
        d = torch.cat([self.margin(x[i:i + batch]) for i in range(0, len(x), batch)])
        self.train(was)
        self.readout.init_from(d.cpu(), click_rate)

    def extra_repr(self) -> str:
        return (f"prompt_tokens={self.num_prompt_tokens}, answer_ids={self.answer_ids.tolist()}, "
                f"train_encoder={self.train_encoder}, prompt_cache={self.prompt_cache}, readout={self.readout.kind}, "
                f"llm={type(self.llm).__name__}({self.llm_dtype})")


# ------------------------------------------------------------------------------------------------ baseline


@dataclass
class Baseline:
    model: CTRModel
    config: dict
    train_sources: list = None        # what avazu_train_baseline trained it on (config.json)

    @property
    def embedding(self) -> FeatureEmbedding:
        return self.model.embedding

    @property
    def encoder(self) -> FieldEncoder:
        """The encoder the baseline was trained with (``FieldGate`` for ``gated``, ``GenEncoder`` for ``gen``)."""
        return self.model.encoder


def load_baseline(model_dir: Path, features: list[str], vocab_sizes: list[int]) -> Baseline:
    """The baseline CTR model written by avazu_train_baseline (``model.pt`` state_dict + ``config.json``),
    checked against the feature map: same fields in the same order, same vocabulary sizes, a DeepFM with an
    encoder (``gated`` or ``gen``: LLM-CTR freezes / tunes whichever it was trained with). A data mismatch
    is a DataError naming the file; a baseline without an encoder a ConfigError naming the params."""
    from pipeline.core.io import read_json

    model_dir = Path(model_dir)
    cfg_file, weights = model_dir / "config.json", model_dir / "model.pt"
    for f in (cfg_file, weights):
        if not f.is_file():
            raise DataError(f, "baseline file missing", expected="the output of avazu_train_baseline")
    meta = read_json(cfg_file)
    if not isinstance(meta, dict) or "model" not in meta:
        raise DataError(cfg_file, "no 'model' entry", field="model", expected="the baseline's constructor config")
    cfg = dict(meta["model"])
    if list(meta.get("features", features)) != list(features):
        raise DataError(cfg_file, f"the baseline's fields {meta.get('features')} differ from the feature map's",
                        field="features", expected=f"{features}")
    sizes = [int(v) for v in cfg.get("vocab_sizes", [])]
    if sizes != list(vocab_sizes):
        bad = [(f, a, b) for f, a, b in zip(features, sizes, vocab_sizes) if a != b]
        what = (f"{len(sizes)} fields vs {len(vocab_sizes)}" if len(sizes) != len(vocab_sizes)
                else ", ".join(f"{f}: {a} vs {b}" for f, a, b in bad[:3]))
        raise DataError(cfg_file, f"the baseline checkpoint does not match the vocabulary ({what}; baseline vs "
                        "feature_map.json)", field="vocab_sizes",
                        expected="a baseline trained on this vocabulary: re-run avazu_train_baseline")
    if cfg.get("name") != "deepfm" or cfg.get("encoder") not in LLM_ENCODERS:
        raise ConfigError(f"ctr.model / ctr.deepfm.encoder: LLM-CTR reuses the baseline's field encoder, "
                          f"but {cfg_file} is {cfg.get('name')!r} with encoder {cfg.get('encoder', 'none')!r} "
                          "(set ctr.model: deepfm, ctr.deepfm.encoder: gated or gen)")
    name = cfg.pop("name")
    cfg.pop("vocab_sizes")
    try:
        model = build_model(name, sizes, **cfg)
        state = load_weights(weights)
        model.load_state_dict(state)
    except (ValueError, RuntimeError, TypeError) as e:
        raise DataError(weights, f"cannot rebuild the baseline from it: {str(e).splitlines()[0]}") from None
    model.eval()
    return Baseline(model, meta["model"], list(meta.get("train_sources", [])))


# ------------------------------------------------------------------------------------------------ building


def build_llm_ctr(baseline: Baseline, bundle: LlmBundle, *, projector_hidden: int, train_encoder: bool,
                  prompt_cache: bool, projector_state: dict | None = None, encoder_state: dict | None = None,
                  readout: str = "seed", readout_state: dict | None = None, seed: int = 0,
                  projector: str = "per_field") -> LlmCtr:
    """Assemble the model from a loaded baseline and LLM. The projector starts from ``projector_state`` when
    given (phase 2 from phase 1, evaluation), else from a seeded init; the encoder from ``encoder_state``
    when given, else from the baseline; the readout (``readout``: affine | seed) from ``readout_state`` when
    given, else neutral (call :meth:`LlmCtr.init_readout` before training)."""
    import copy

    emb = baseline.embedding                         # frozen and never written: shared between models
    enc = copy.deepcopy(baseline.encoder)           # trained in phase 2: each model gets its own copy
    if encoder_state is not None:
        enc.load_state_dict(encoder_state)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        if projector not in PROJECTORS:
            raise ConfigError(f"llm_ctr.projector: '{projector}' is not one of {list(PROJECTORS)}")
        proj = PROJECTORS[projector](emb.num_fields, emb.embedding_dim, projector_hidden, bundle.hidden_size,
                                     out_scale=bundle.embedding_rms())
    if projector_state is not None:
        proj.load_state_dict(projector_state)
    model = LlmCtr(emb, enc, proj, bundle.llm, bundle.prompt_ids, bundle.answer_ids, train_encoder=train_encoder,
                   prompt_cache=prompt_cache, readout=readout)
    if readout_state:
        model.readout.load_state_dict(readout_state)
    return model


def split_state(state: dict) -> tuple[dict, dict | None]:
    """(projector state, encoder state or None) from an LlmCtr state_dict."""
    return part_state(state, "projector"), (part_state(state, "encoder") or None)


def part_state(state: dict, part: str) -> dict:
    """The entries of sub-module ``part`` (projector, encoder, readout) of an LlmCtr state_dict."""
    return {k[len(part) + 1:]: v for k, v in state.items() if k.startswith(part + ".")}


def dir_fingerprint(path: Path) -> str:
    """md5 over the names and contents of every file under ``path`` (resume keys: a checkpoint is never
    resumed under another LLM, baseline or phase-1 model)."""
    import hashlib

    from pipeline.core.io import md5_file

    h = hashlib.md5()
    for f in sorted(Path(path).rglob("*")):
        if f.is_file():
            h.update(str(f.relative_to(path)).encode())
            h.update(md5_file(f).encode())
    return h.hexdigest()
