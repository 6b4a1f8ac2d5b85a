"""The CTR model zoo: DNN, WideDeep, PNN (IPNN), DeepFM, DCN, DLRM and DCNv2, as FuxiCTR v2 defines them
(``model_zoo/<Name>/src/<Name>.py`` of https://github.com/reczoo/FuxiCTR), with the registry that is the one
list of model names and the typed ``ctr`` params section.

All inputs are categorical: a batch is a ``LongTensor[B, F]`` (int32 works too) of per-field ids in which
0 is ``__PAD__`` (FuxiCTR's vocabulary convention, see :mod:`pipeline.ctr.vocab`). Every model returns
**logits** ``[B]``; the sigmoid lives in the loss (BCE-with-logits), not in the model. The shared layers
(embeddings, MLP, FM term, inner products, cross networks, the field gate, the network initialisation) are in
:mod:`pipeline.ctr.layers`.

The models (hyper-parameter names mapped onto the shared ``hidden_units`` / ``dropout`` / ``batch_norm``):

* ``DNN``      -- MLP over the flattened field embeddings -> 1.
* ``WideDeep`` -- first-order LR term (no bias, as in FuxiCTR: the DNN's output layer carries the bias)
  + MLP over the flattened embeddings -> 1, summed.
* ``PNN``      -- inner-product PNN: [flattened embeddings, all F(F-1)/2 inner products] -> MLP -> 1.
* ``DeepFM``   -- first-order LR term (with bias) + FM second-order term + MLP over the flattened
  embeddings -> 1, summed into one logit. With ``encoder="gated"`` the field embeddings pass through a
  :class:`~pipeline.ctr.layers.FieldGate` first, and both the FM term and the MLP see the gated embeddings
  (the first-order term reads the ids directly and is not gated). This encoder is *not* in FuxiCTR (nor
  the seed's). With ``encoder="gen"`` it is the LLM-CTR seed's GEN-DeepFM: the
  :class:`~pipeline.ctr.layers.GenEncoder` ``g = ReLU(W vec(E)) · scale`` (full bias-free field mixing),
  the FM term ``sum_{i<j} <g_i, e_j>`` between GEN outputs and *raw* embeddings
  (:func:`~pipeline.ctr.layers.gen_fm_second_order`), and the MLP on the raw embeddings.
* ``DCN``      -- CrossNet (x_{l+1} = x0 * (x_l^T w_l) + b_l + x_l) over the flattened embeddings, in
  parallel with an MLP; [cross_out, dnn_out] -> Linear -> 1. ``hidden_units=[]`` gives the crossnet-only
  DCN, as in FuxiCTR.
* ``DLRM``     -- no dense features here, so no bottom MLP and no dense vector: ``interaction_op="dot"``
  feeds exactly the F(F-1)/2 pairwise dot products to the top MLP (FuxiCTR's DLRM only concatenates the
  bottom-MLP output, never the sparse embeddings themselves, and there is no bottom MLP without dense
  features); ``"cat"`` feeds the flattened embeddings. Top MLP -> 1.
* ``DCNv2``    -- CrossNetV2 (x_{l+1} = x0 * (W_l x_l + b_l) + x_l), or CrossNetMix (mixture of low-rank
  experts) when ``use_low_rank_mixture``, in one of FuxiCTR's structures: ``crossnet_only``,
  ``stacked`` (cross -> MLP), ``parallel`` ([cross, MLP(x0)]) or ``stacked_parallel``
  ([MLP(cross), MLP(x0)]), then Linear -> 1. FuxiCTR's ``stacked_dnn_hidden_units`` and
  ``parallel_dnn_hidden_units`` are both ``hidden_units`` here.

Deviations from FuxiCTR, and why:

* Logits out, no output activation (the training loop uses BCE-with-logits, which is numerically safer).
* Each field has its own ``nn.Embedding`` addressed by position (no feature_map, no sharing, no
  pretrained or numeric features) so optimizers such as Helen/SAM can treat each field's table apart.
* DCNv2 with an MLP-using structure and ``hidden_units=[]`` raises ``ValueError`` (FuxiCTR crashes with an
  IndexError); DLRM's ``dropout`` is FuxiCTR's ``top_mlp_dropout`` and there is no ``bottom_mlp_*``.
* Defaults follow this project's brief (embedding_dim 16, hidden_units [400, 400, 400]) rather than each
  FuxiCTR model's own default; the model-specific defaults (num_cross_layers=3, model_structure
  "parallel", low_rank=32, num_experts=4, interaction_op "dot") are FuxiCTR's.

The extension point: a model class registers itself with ``@register("<name>")`` (its name is typed once,
there) and, if it has params of its own, declares them as a nested frozen dataclass ``Options``
(a :class:`ModelOptions`, whose ``kwargs()`` maps them onto constructor arguments); its constructor takes
the shared keys (``embedding_dim``, ``hidden_units``, ``dropout``, ``batch_norm``, ``dropout_impl``) and
passes them to :class:`CTRModel`. :data:`MODELS` is then
the one list of names: :class:`CtrParams` (the ``ctr`` params section) accepts exactly the registered names
for ``ctr.model`` and one sub-section ``ctr.<name>`` per registered model that has ``Options``, and
:func:`build_ctr_model` builds the selected one. Adding a model touches its class (here or in a module
imported here), its ``ctr.<name>`` block in params.yaml (if it has options) and its test.

Building and rebuilding: :func:`build_model` validates the name and the keyword arguments (``ValueError``
naming the culprit), and :func:`model_config` returns the JSON-safe ``{"name", "vocab_sizes", **kwargs}``
that ``build_model(**config)`` turns back into an identical model (the format of the baseline's
config.json, which LLM-CTR rebuilds the baseline from).
"""

from __future__ import annotations

import copy
import dataclasses
import inspect
import typing
from dataclasses import dataclass
from typing import Annotated, Any, ClassVar, Literal, Sequence

import torch
from torch import nn

from pipeline.core.errors import ConfigError, DataError
from pipeline.core.io import load_weights
from pipeline.core.params import NonNegInt, PosInt, Range, check_keys, from_mapping
from pipeline.ctr.layers import (
    DROPOUT_IMPLS, MLP, CrossNet, CrossNetMix, CrossNetV2, FeatureEmbedding, FieldGate, GenEncoder, InnerProductInteraction,
    fm_second_order, gen_fm_second_order, reset_net,
)

__all__ = [
    "CTRModel", "DNN", "WideDeep", "PNN", "DeepFM", "DCN", "DLRM", "DCNv2", "MODELS", "ModelOptions",
    "register", "build_model", "model_config", "CtrShared", "CtrParams", "build_ctr_model",
]

DEFAULT_HIDDEN_UNITS = (400, 400, 400)


# --------------------------------------------------------------------------------------------------
# the registry: the one list of model names


MODELS: dict[str, type["CTRModel"]] = {}


class ModelOptions:
    """Base of a model's own params (``<Model>.Options``, a frozen dataclass, parsed from ``ctr.<name>``).

    ``kwargs()`` maps the options onto the model's constructor arguments (default: field name = argument
    name); a numeric option declares its valid range on the field (``NonNegInt``, ``Annotated[int, Range(...)]``;
    checked when params.yaml is parsed) and ``validate(prefix)`` checks what a range cannot say (one option
    against another), raising ``ConfigError`` naming ``<prefix>.<key>``."""

    def kwargs(self) -> dict:
        return {f.name: copy.deepcopy(getattr(self, f.name)) for f in dataclasses.fields(self)}

    def validate(self, prefix: str) -> None:
        pass


@dataclass(frozen=True)
class CtrShared:
    """The ``ctr`` keys every model shares (see :class:`CtrParams`)."""

    model: str                 # a name in MODELS
    embedding_dim: PosInt
    hidden_units: list[PosInt]  # MLP widths ([] = no MLP where the model allows it)
    dropout: Annotated[float, Range(ge=0, lt=1)]
    dropout_impl: Literal["torch", "fast"]   # torch: nn.Dropout (FuxiCTR's); fast: layers.FastDropout
    batch_norm: bool


SHARED_KEYS = tuple(f.name for f in dataclasses.fields(CtrShared))


def register(name: str):
    """Class decorator: ``@register("deepfm") class DeepFM(CTRModel)`` adds the class to :data:`MODELS`
    under ``name`` (lower case) and sets its ``name``. ``cls.Options`` (``None`` or a frozen dataclass
    subclassing :class:`ModelOptions`) becomes the ``ctr.<name>`` params sub-section."""
    key = str(name).lower()

    def add(cls: type[CTRModel]) -> type[CTRModel]:
        if key in MODELS:
            raise ValueError(f"model name {key!r} is already registered (by {MODELS[key].__name__})")
        if key in (*SHARED_KEYS, "by_model", "options"):
            raise ValueError(f"model name {key!r} collides with the ctr key / CtrParams field of that name")
        opts = cls.Options
        if opts is not None and not (isinstance(opts, type) and issubclass(opts, ModelOptions)
                                     and dataclasses.is_dataclass(opts) and opts.__dataclass_params__.frozen):
            raise TypeError(f"{cls.__name__}.Options must be a frozen dataclass subclassing ModelOptions")
        cls.name = key
        MODELS[key] = cls
        return cls

    return add


# --------------------------------------------------------------------------------------------------
# models


class CTRModel(nn.Module):
    """Base of the zoo: holds ``embedding`` (and optionally ``first_order``), the constructor config, the
    parameter split used by the training loop, and FuxiCTR's network initialisation."""

    name: str = ""                                     # set by @register
    Options: ClassVar[type[ModelOptions] | None] = None   # the model's own params (ctr.<name>), if any

    def __init__(self, vocab_sizes: Sequence[int], embedding_dim: int = 16,
                 hidden_units: Sequence[int] = DEFAULT_HIDDEN_UNITS, dropout: float = 0.0,
                 batch_norm: bool = False, *, dropout_impl: str = "torch", first_order: bool = False,
                 **model_specific):
        super().__init__()
        self.vocab_sizes = [int(v) for v in vocab_sizes]
        self.embedding_dim = int(embedding_dim)
        self.hidden_units = [int(h) for h in hidden_units]
        if any(h < 1 for h in self.hidden_units):
            raise ValueError(f"hidden_units must be positive, got {self.hidden_units}")
        if not 0.0 <= float(dropout) < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout}")
        self.dropout = float(dropout)
        self.batch_norm = bool(batch_norm)
        if dropout_impl not in DROPOUT_IMPLS:
            raise ValueError(f"dropout_impl must be one of {list(DROPOUT_IMPLS)}, got {dropout_impl!r}")
        self.dropout_impl = str(dropout_impl)
        self.config = {
            "name": self.name, "vocab_sizes": list(self.vocab_sizes), "embedding_dim": self.embedding_dim,
            "hidden_units": list(self.hidden_units), "dropout": self.dropout, "batch_norm": self.batch_norm,
            "dropout_impl": self.dropout_impl, **model_specific,
        }
        self.embedding = FeatureEmbedding(self.vocab_sizes, self.embedding_dim)
        self.first_order = FeatureEmbedding(self.vocab_sizes, 1) if first_order else None

    @property
    def num_fields(self) -> int:
        return len(self.vocab_sizes)

    def _mlp(self, input_dim: int, hidden_units: Sequence[int] | None = None, output_dim: int | None = None) -> MLP:
        units = self.hidden_units if hidden_units is None else hidden_units
        return MLP(input_dim, units, "relu", self.dropout, self.batch_norm, output_dim=output_dim,
                   dropout_impl=self.dropout_impl)

    def _reset_net(self) -> None:
        """FuxiCTR's BaseModel.reset_parameters (:func:`pipeline.ctr.layers.reset_net`)."""
        reset_net(self)

    def _first_order_logit(self, x: torch.Tensor) -> torch.Tensor:
        return self.first_order(x).sum(dim=(1, 2))

    # -- parameter groups for the training loop --------------------------------------------------------

    def embedding_groups(self) -> dict[str, list[nn.Embedding]]:
        groups = {"embedding": list(self.embedding.tables)}
        if self.first_order is not None:
            groups["first_order"] = list(self.first_order.tables)
        return groups

    def embedding_tables(self) -> list[nn.Embedding]:
        return [t for tables in self.embedding_groups().values() for t in tables]

    def embedding_parameters(self) -> list[nn.Parameter]:
        return [p for t in self.embedding_tables() for p in t.parameters()]

    def net_parameters(self) -> list[nn.Parameter]:
        emb = {id(p) for p in self.embedding_parameters()}
        return [p for p in self.parameters() if id(p) not in emb]

    def extra_repr(self) -> str:
        return f"name={self.name!r}, fields={self.num_fields}"


@register("dnn")
class DNN(CTRModel):
    """MLP over the flattened field embeddings -> 1 logit."""

    def __init__(self, vocab_sizes, embedding_dim=16, hidden_units=DEFAULT_HIDDEN_UNITS, dropout=0.0,
                 batch_norm=False, dropout_impl: str = "torch"):
        super().__init__(vocab_sizes, embedding_dim, hidden_units, dropout, batch_norm, dropout_impl=dropout_impl)
        self.mlp = self._mlp(self.num_fields * self.embedding_dim, output_dim=1)
        self._reset_net()

    def forward(self, x):
        return self.mlp(self.embedding(x).flatten(start_dim=1)).squeeze(-1)


@register("widedeep")
class WideDeep(CTRModel):
    """First-order LR term (no bias) + MLP over the flattened embeddings -> 1, summed."""

    def __init__(self, vocab_sizes, embedding_dim=16, hidden_units=DEFAULT_HIDDEN_UNITS, dropout=0.0,
                 batch_norm=False, dropout_impl: str = "torch"):
        super().__init__(vocab_sizes, embedding_dim, hidden_units, dropout, batch_norm, first_order=True,
                         dropout_impl=dropout_impl)
        self.mlp = self._mlp(self.num_fields * self.embedding_dim, output_dim=1)
        self._reset_net()

    def forward(self, x):
        deep = self.mlp(self.embedding(x).flatten(start_dim=1)).squeeze(-1)
        return self._first_order_logit(x) + deep


@register("pnn")
class PNN(CTRModel):
    """Inner-product PNN: [flattened embeddings, F(F-1)/2 inner products] -> MLP -> 1."""

    def __init__(self, vocab_sizes, embedding_dim=16, hidden_units=DEFAULT_HIDDEN_UNITS, dropout=0.0,
                 batch_norm=False, dropout_impl: str = "torch"):
        super().__init__(vocab_sizes, embedding_dim, hidden_units, dropout, batch_norm, dropout_impl=dropout_impl)
        self.inner_product = InnerProductInteraction(self.num_fields)
        self.mlp = self._mlp(self.num_fields * self.embedding_dim + self.inner_product.output_dim, output_dim=1)
        self._reset_net()

    def forward(self, x):
        emb = self.embedding(x)
        h = torch.cat([emb.flatten(start_dim=1), self.inner_product(emb)], dim=1)
        return self.mlp(h).squeeze(-1)


DeepFMEncoder = Literal["none", "gated", "gen"]


@register("deepfm")
class DeepFM(CTRModel):
    """First-order LR (with bias) + FM second-order term + MLP over flattened embeddings, summed.

    ``E = embedding(x)`` ``[B, F, D]``, ``lr = sum_f w_f(x_f) + b``; then per ``encoder``:

    * ``"none"``:  ``logit = lr + FM(E) + MLP(vec E)``, ``FM(E) = sum_{i<j} <e_i, e_j>``.
    * ``"gated"``: ``E' = FieldGate(E)``, ``logit = lr + FM(E') + MLP(vec E')`` (this project's encoder).
    * ``"gen"``:   the LLM-CTR seed's GEN-DeepFM (the seed's formulas; our code):
      ``G = GEN(E) = ReLU(W vec(E)) · scale`` (:class:`~pipeline.ctr.layers.GenEncoder`, W (F·D)×(F·D), no
      bias, learnable scalar scale starting at 1, Xavier-normal W),
      ``logit = lr + sum_{i<j} <g_i, e_j> + MLP(vec E)``: the FM term pairs the GEN output of the earlier
      field with the RAW embedding of the later one (:func:`~pipeline.ctr.layers.gen_fm_second_order`) and
      the MLP reads the raw embeddings, so GEN only enters the logit through the FM term. We implement
      that ordered pairing as the seed writes it, not the symmetric cross form
      ``0.5·(<Σg, Σe> − Σ<g_i, e_i>)``, so that ``encoder: gen`` *is* the seed's recipe; its consequences
      (``g_{F-1}`` has no FM partner, so the baseline never trains the last field's GEN rows; the term
      depends on the field order, which config.json's ``features`` fixes) are documented there.

    ``self.encoder`` is the FieldGate / GenEncoder (``None`` for ``"none"``): what LLM-CTR freezes / tunes,
    and whose output ``[B, F, D]`` its soft tokens read.
    """

    ENCODERS = typing.get_args(DeepFMEncoder)

    @dataclass(frozen=True)
    class Options(ModelOptions):
        """``ctr.deepfm``."""

        encoder: DeepFMEncoder     # none | gated | gen (the encoder LLM-CTR freezes / tunes)

    def __init__(self, vocab_sizes, embedding_dim=16, hidden_units=DEFAULT_HIDDEN_UNITS, dropout=0.0,
                 batch_norm=False, dropout_impl: str = "torch", encoder: str = "none"):
        if encoder not in self.ENCODERS:
            raise ValueError(f"DeepFM encoder={encoder!r} is not supported; choose one of {list(self.ENCODERS)}")
        super().__init__(vocab_sizes, embedding_dim, hidden_units, dropout, batch_norm, dropout_impl=dropout_impl, first_order=True,
                         encoder=encoder)
        self.encoder_type = encoder
        if encoder == "gated":
            self.encoder = FieldGate(self.num_fields, self.embedding_dim)
        elif encoder == "gen":
            self.encoder = GenEncoder(self.num_fields, self.embedding_dim)
        else:
            self.encoder = None
        self.lr_bias = nn.Parameter(torch.zeros(1))
        self.mlp = self._mlp(self.num_fields * self.embedding_dim, output_dim=1)
        self._reset_net()

    def forward(self, x):
        emb = self.embedding(x)
        lr = self._first_order_logit(x) + self.lr_bias
        if self.encoder_type == "gen":
            deep = self.mlp(emb.flatten(start_dim=1)).squeeze(-1)
            return lr + gen_fm_second_order(self.encoder(emb), emb) + deep
        if self.encoder is not None:
            emb = self.encoder(emb)
        deep = self.mlp(emb.flatten(start_dim=1)).squeeze(-1)
        return lr + fm_second_order(emb) + deep


@register("dcn")
class DCN(CTRModel):
    """CrossNet in parallel with an MLP over the flattened embeddings; [cross, dnn] -> Linear -> 1.
    ``hidden_units=[]`` drops the MLP (crossnet-only DCN)."""

    @dataclass(frozen=True)
    class Options(ModelOptions):
        """``ctr.dcn``."""

        num_cross_layers: NonNegInt     # 0 = no cross layers

    def __init__(self, vocab_sizes, embedding_dim=16, hidden_units=DEFAULT_HIDDEN_UNITS, dropout=0.0,
                 batch_norm=False, dropout_impl: str = "torch", num_cross_layers: int = 3):
        if int(num_cross_layers) < 0:
            raise ValueError(f"num_cross_layers must be >= 0, got {num_cross_layers}")
        super().__init__(vocab_sizes, embedding_dim, hidden_units, dropout, batch_norm, dropout_impl=dropout_impl,
                         num_cross_layers=int(num_cross_layers))
        d = self.num_fields * self.embedding_dim
        self.crossnet = CrossNet(d, int(num_cross_layers))
        self.dnn = self._mlp(d) if self.hidden_units else None
        self.fc = nn.Linear(d + (self.hidden_units[-1] if self.hidden_units else 0), 1)
        self._reset_net()

    def forward(self, x):
        x0 = self.embedding(x).flatten(start_dim=1)
        out = self.crossnet(x0)
        if self.dnn is not None:
            out = torch.cat([out, self.dnn(x0)], dim=-1)
        return self.fc(out).squeeze(-1)


DLRMInteraction = Literal["dot", "cat"]


@register("dlrm")
class DLRM(CTRModel):
    """DLRM without dense features: ``dot`` -> the F(F-1)/2 pairwise dot products, ``cat`` -> the flattened
    embeddings; then the top MLP -> 1."""

    INTERACTIONS = typing.get_args(DLRMInteraction)

    @dataclass(frozen=True)
    class Options(ModelOptions):
        """``ctr.dlrm``."""

        interaction: DLRMInteraction    # dot | cat

        def kwargs(self) -> dict:
            return {"interaction_op": self.interaction}

    def __init__(self, vocab_sizes, embedding_dim=16, hidden_units=DEFAULT_HIDDEN_UNITS, dropout=0.0,
                 batch_norm=False, dropout_impl: str = "torch", top_mlp_units: Sequence[int] | None = None, interaction_op: str = "dot"):
        if interaction_op not in self.INTERACTIONS:
            raise ValueError(f"DLRM interaction_op={interaction_op!r} is not supported; "
                             f"choose one of {list(self.INTERACTIONS)}")
        top = list(hidden_units) if top_mlp_units is None else list(top_mlp_units)
        top = [int(h) for h in top]
        super().__init__(vocab_sizes, embedding_dim, hidden_units, dropout, batch_norm, dropout_impl=dropout_impl,
                         top_mlp_units=top, interaction_op=interaction_op)
        if any(h < 1 for h in top):
            raise ValueError(f"top_mlp_units must be positive, got {top}")
        self.top_mlp_units = top
        self.interaction_op = interaction_op
        if interaction_op == "dot":
            if self.num_fields < 2:
                raise ValueError("DLRM interaction_op='dot' needs at least 2 fields")
            self.interact = InnerProductInteraction(self.num_fields)
            top_in = self.interact.output_dim
        else:
            self.interact = nn.Flatten(start_dim=1)
            top_in = self.num_fields * self.embedding_dim
        self.top_mlp = self._mlp(top_in, hidden_units=top, output_dim=1)
        self._reset_net()

    def forward(self, x):
        return self.top_mlp(self.interact(self.embedding(x))).squeeze(-1)


DCNv2Structure = Literal["parallel", "stacked", "crossnet_only", "stacked_parallel"]


@register("dcnv2")
class DCNv2(CTRModel):
    """CrossNetV2 (or CrossNetMix) + MLP in FuxiCTR's structures, then Linear -> 1."""

    STRUCTURES = typing.get_args(DCNv2Structure)

    @dataclass(frozen=True)
    class Options(ModelOptions):
        """``ctr.dcnv2`` (the low-rank mixture keeps its constructor defaults: off)."""

        num_cross_layers: NonNegInt   # 0 = no cross layers
        structure: DCNv2Structure     # parallel | stacked | crossnet_only | stacked_parallel

        def kwargs(self) -> dict:
            return {"num_cross_layers": self.num_cross_layers, "model_structure": self.structure}

    def __init__(self, vocab_sizes, embedding_dim=16, hidden_units=DEFAULT_HIDDEN_UNITS, dropout=0.0,
                 batch_norm=False, dropout_impl: str = "torch", num_cross_layers: int = 3, model_structure: str = "parallel",
                 use_low_rank_mixture: bool = False, low_rank: int = 32, num_experts: int = 4):
        if model_structure not in self.STRUCTURES:
            raise ValueError(f"DCNv2 model_structure={model_structure!r} is not supported; "
                             f"choose one of {list(self.STRUCTURES)}")
        if int(num_cross_layers) < 0 or int(low_rank) < 1 or int(num_experts) < 1:
            raise ValueError(f"DCNv2 needs num_cross_layers >= 0, low_rank >= 1, num_experts >= 1; got "
                             f"{num_cross_layers}, {low_rank}, {num_experts}")
        super().__init__(vocab_sizes, embedding_dim, hidden_units, dropout, batch_norm, dropout_impl=dropout_impl,
                         num_cross_layers=int(num_cross_layers), model_structure=model_structure,
                         use_low_rank_mixture=bool(use_low_rank_mixture), low_rank=int(low_rank),
                         num_experts=int(num_experts))
        if model_structure != "crossnet_only" and not self.hidden_units:
            raise ValueError(f"DCNv2 model_structure={model_structure!r} needs non-empty hidden_units")
        self.model_structure = model_structure
        d = self.num_fields * self.embedding_dim
        if use_low_rank_mixture:
            self.crossnet = CrossNetMix(d, int(num_cross_layers), int(low_rank), int(num_experts))
        else:
            self.crossnet = CrossNetV2(d, int(num_cross_layers))
        self.stacked_dnn = self._mlp(d) if model_structure in ("stacked", "stacked_parallel") else None
        self.parallel_dnn = self._mlp(d) if model_structure in ("parallel", "stacked_parallel") else None
        final_dim = {
            "crossnet_only": d,
            "stacked": self.hidden_units[-1] if self.hidden_units else 0,
            "parallel": d + (self.hidden_units[-1] if self.hidden_units else 0),
            "stacked_parallel": 2 * (self.hidden_units[-1] if self.hidden_units else 0),
        }[model_structure]
        self.fc = nn.Linear(final_dim, 1)
        self._reset_net()

    def forward(self, x):
        x0 = self.embedding(x).flatten(start_dim=1)
        cross = self.crossnet(x0)
        if self.model_structure == "crossnet_only":
            out = cross
        elif self.model_structure == "stacked":
            out = self.stacked_dnn(cross)
        elif self.model_structure == "parallel":
            out = torch.cat([cross, self.parallel_dnn(x0)], dim=-1)
        else:
            out = torch.cat([self.stacked_dnn(cross), self.parallel_dnn(x0)], dim=-1)
        return self.fc(out).squeeze(-1)


# --------------------------------------------------------------------------------------------------
# building and rebuilding


def _accepted_kwargs(cls: type[CTRModel]) -> list[str]:
    params = inspect.signature(cls.__init__).parameters
    return [n for n, p in params.items() if n not in ("self", "vocab_sizes")
            and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]


def build_model(name: str, vocab_sizes: Sequence[int], **kwargs) -> CTRModel:
    """Build ``MODELS[name]`` (name case-insensitive). Raises ``ValueError`` for an unknown model name or a
    keyword argument the model does not take, naming it and what is known/accepted."""
    key = str(name).lower()
    if key not in MODELS:
        raise ValueError(f"unknown model {name!r}; known models: {sorted(MODELS)}")
    cls = MODELS[key]
    accepted = _accepted_kwargs(cls)
    unknown = [k for k in kwargs if k not in accepted]
    if unknown:
        raise ValueError(f"model {key!r} got unknown keyword argument(s) {unknown}; it accepts {accepted}")
    return cls(list(vocab_sizes), **kwargs)


def model_config(model: CTRModel) -> dict:
    """The JSON-serialisable constructor arguments: ``build_model(**model_config(m))`` rebuilds ``m``'s
    architecture (parameter names and shapes; load the state_dict for the weights)."""
    return copy.deepcopy(model.config)


# --------------------------------------------------------------------------------------------------
# the ctr params section


def _models_with_options() -> list[str]:
    return [n for n, cls in MODELS.items() if cls.Options is not None]


@dataclass(frozen=True)
class CtrParams(CtrShared):
    """params.yaml ``ctr``: the CTR model (FuxiCTR model_zoo semantics), built by :func:`build_ctr_model`.

    The shared keys (:class:`CtrShared`; ``model`` is one of :data:`MODELS`) plus one sub-section
    ``ctr.<name>`` per registered model that has ``Options``, each parsed with that model's ``Options``
    (an unknown, missing or mistyped key is a ``ConfigError`` naming e.g. ``ctr.dcnv2.structure``). Every
    sub-section is required and checked, whichever model is selected. ``by_model`` maps each such model
    name to its parsed options, ``options`` is the selected model's (``None`` for a model without any), and
    ``ctr.<name>`` also reads as the attribute ``<name>`` (``p.ctr.deepfm.encoder``).
    """

    SECTION: ClassVar[str] = "ctr"

    by_model: dict[str, Any]

    @classmethod
    def from_params(cls, data, prefix: str = "ctr") -> "CtrParams":
        dot = f"{prefix}." if prefix else ""
        if not isinstance(data, dict):
            raise ConfigError(f"{prefix}: expected a mapping, got {type(data).__name__}")
        subs = _models_with_options()
        names = [*SHARED_KEYS, *subs]
        check_keys(data, names, prefix)
        shared = from_mapping(CtrShared, {k: data[k] for k in SHARED_KEYS}, prefix)
        if shared.model not in MODELS:
            raise ConfigError(f"{dot}model: '{shared.model}' is not one of {list(MODELS)}")
        by_model = {}
        for name in subs:
            if not isinstance(data[name], dict):
                raise ConfigError(f"{dot}{name}: expected a mapping, got {type(data[name]).__name__}")
            by_model[name] = from_mapping(MODELS[name].Options, data[name], f"{dot}{name}")
        return cls(**{k: getattr(shared, k) for k in SHARED_KEYS}, by_model=by_model)

    def validate(self) -> "CtrParams":
        p = self.SECTION
        for name, opts in self.by_model.items():
            opts.validate(f"{p}.{name}")
        return self

    def __getattr__(self, name: str):
        by_model = self.__dict__.get("by_model") or {}
        if name.startswith("__") or name not in by_model:
            raise AttributeError(name)
        return by_model[name]

    @property
    def options(self) -> ModelOptions | None:
        """The selected model's options (``None`` for a model without any)."""
        return self.by_model.get(self.model)

    def model_kwargs(self) -> dict:
        """Constructor arguments of ``model``: the shared ones plus that model's own options only."""
        kw = {"embedding_dim": self.embedding_dim, "hidden_units": list(self.hidden_units),
              "dropout": self.dropout, "batch_norm": self.batch_norm, "dropout_impl": self.dropout_impl}
        if self.options is not None:
            kw.update(self.options.kwargs())
        return kw

    def with_model(self, model: str, **changes) -> "CtrParams":
        """A copy with ``model`` selected and ``changes`` applied to its options (benchmarks, comparisons)."""
        if model not in MODELS:
            raise ConfigError(f"{self.SECTION}.model: '{model}' is not one of {list(MODELS)}")
        by_model = dict(self.by_model)
        if changes:
            if model not in by_model:
                raise ConfigError(f"{self.SECTION}.{model}: model {model!r} has no options to change")
            by_model[model] = dataclasses.replace(by_model[model], **changes)
        return dataclasses.replace(self, model=model, by_model=by_model)


def build_ctr_model(ctr: CtrParams, vocab_sizes: Sequence[int]) -> CTRModel:
    """The model ``ctr`` selects, with the shared params and its own options."""
    return build_model(ctr.model, vocab_sizes, **ctr.model_kwargs())


def load_model_dir(model_dir, features: list[str], vocab_sizes: list[int]) -> "CTRModel":
    """A trained CTR model folder (``model.pt`` state_dict + ``config.json`` with the constructor arguments,
    as avazu_train_baseline and the study runs write it), checked against the feature map (same fields,
    same vocabulary sizes), in eval mode; every problem is a DataError naming the file."""
    from pathlib import Path

    from pipeline.core.io import read_json

    d = Path(model_dir)
    cfg_file, weights = d / "config.json", d / "model.pt"
    for f in (cfg_file, weights):
        if not f.is_file():
            raise DataError(f, "model file missing", expected="a trained model folder (model.pt + config.json)")
    meta = read_json(cfg_file)
    cfg = dict(meta.get("model", {})) if isinstance(meta, dict) else {}
    if list(meta.get("features", [])) != list(features) or [int(v) for v in cfg.get("vocab_sizes", [])] != list(vocab_sizes):
        raise DataError(cfg_file, "the model's fields / vocabulary sizes differ from the feature map's",
                        field="vocab_sizes", expected="a model trained on this vocabulary")
    name, sizes = cfg.pop("name"), cfg.pop("vocab_sizes")
    try:
        model = build_model(name, sizes, **cfg)
        model.load_state_dict(load_weights(weights))
    except (ValueError, RuntimeError, TypeError) as e:
        raise DataError(weights, f"cannot rebuild the model from it: {str(e).splitlines()[0]}") from None
    return model.eval()
