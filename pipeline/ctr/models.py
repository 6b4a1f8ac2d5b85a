"""The CTR model zoo: DNN, WideDeep, PNN (IPNN), DeepFM, DCN, DLRM and DCNv2, as FuxiCTR v2 defines them.

All inputs are categorical: a batch is a ``LongTensor[B, F]`` (int32 works too) of per-field ids in which
0 is ``__PAD__`` (FuxiCTR's vocabulary convention, see :mod:`pipeline.ctr.vocab`). Every model returns
**logits** ``[B]``; the sigmoid lives in the loss (BCE-with-logits), not in the model.

Shared pieces (one implementation each, used by every model):

* :class:`FeatureEmbedding` -- one ``nn.Embedding(vocab_size, dim, padding_idx=0)`` per field, rows 1..
  drawn from N(0, 1e-4^2) and the padding row zero (FuxiCTR's default ``embedding_initializer``).
* The first-order ("LR") term -- a second :class:`FeatureEmbedding` of dim 1, summed over fields, plus an
  optional bias (FuxiCTR's ``LogisticRegression``: the 1-dim embedding trick for one-hot weights).
* :class:`MLP` -- Linear -> [BatchNorm] -> activation -> [Dropout] per hidden layer, then an optional
  output Linear (FuxiCTR's ``MLP_Block``).
* :func:`fm_second_order` -- 0.5 * ((sum e)^2 - sum e^2) summed over the embedding dim
  (``InnerProductInteraction(output="product_sum")``).
* :class:`InnerProductInteraction` -- the F(F-1)/2 pairwise inner products <e_i, e_j>, i < j, in
  row-major upper-triangular order (``InnerProductInteraction(output="inner_product")``).
* :class:`CrossNet` (DCN), :class:`CrossNetV2` and :class:`CrossNetMix` (DCNv2).
* :class:`FieldGate` -- the field-wise gated embedding encoder ("GEN"), used by DeepFM(encoder="gated").

Network initialisation follows FuxiCTR's ``BaseModel.reset_parameters``: every ``nn.Linear`` gets
Xavier-normal weights and zero bias, then modules with an ``init_weights()`` hook apply their own (here only
:class:`FieldGate`). CrossNetMix's U/V/C tensors are Xavier-normal on the same 3-d shapes as FuxiCTR.

The models (FuxiCTR's ``model_zoo/<Name>/src/<Name>.py``; hyper-parameter names mapped onto the shared
``hidden_units`` / ``dropout`` / ``batch_norm``):

* ``DNN``      -- MLP over the flattened field embeddings -> 1.
* ``WideDeep`` -- first-order LR term (no bias, as in FuxiCTR: the DNN's output layer carries the bias)
  + MLP over the flattened embeddings -> 1, summed.
* ``PNN``      -- inner-product PNN: [flattened embeddings, all F(F-1)/2 inner products] -> MLP -> 1.
* ``DeepFM``   -- first-order LR term (with bias) + FM second-order term + MLP over the flattened
  embeddings -> 1, summed into one logit. With ``encoder="gated"`` the field embeddings pass through a
  :class:`FieldGate` first, and both the FM term and the MLP see the gated embeddings (the first-order
  term reads the ids directly and is not gated). This encoder is *not* in FuxiCTR; it is the GEN of the
  LLM-CTR seed.
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
* The pair indices of the inner-product layers are non-persistent buffers, not frozen ``nn.Parameter``s
  as in FuxiCTR, so they do not show up in ``parameters()`` or the ``state_dict``.
* CrossNetMix is written batched over experts (einsum) instead of FuxiCTR's Python loop, with the bias as a
  ``[d]`` vector instead of ``[d, 1]``; the arithmetic is the same. FuxiCTR's trailing ``squeeze()``
  (which breaks at batch size 1) is not reproduced. As in FuxiCTR the expert gates are shared by all
  cross layers.
* DCNv2 with an MLP-using structure and ``hidden_units=[]`` raises ``ValueError`` (FuxiCTR crashes with an
  IndexError); DLRM's ``dropout`` is FuxiCTR's ``top_mlp_dropout`` and there is no ``bottom_mlp_*``.
* Defaults follow this project's brief (embedding_dim 16, hidden_units [400, 400, 400]) rather than each
  FuxiCTR model's own default; the model-specific defaults (num_cross_layers=3, model_structure
  "parallel", low_rank=32, num_experts=4, interaction_op "dot") are FuxiCTR's.

Building and rebuilding: ``MODELS`` maps names to classes, :func:`build_model` validates the name and the
keyword arguments (``ValueError`` naming the culprit), and :func:`model_config` returns the JSON-safe
``{"name", "vocab_sizes", **kwargs}`` that ``build_model(**config)`` turns back into an identical model.
"""

from __future__ import annotations

import copy
import inspect
from typing import Sequence

import torch
from torch import nn

__all__ = [
    "FeatureEmbedding", "MLP", "FieldGate", "InnerProductInteraction", "CrossNet", "CrossNetV2",
    "CrossNetMix", "fm_second_order", "CTRModel", "DNN", "WideDeep", "PNN", "DeepFM", "DCN", "DLRM",
    "DCNv2", "MODELS", "build_model", "model_config",
]

EMBEDDING_INIT_STD = 1e-4          # FuxiCTR: partial(nn.init.normal_, std=1e-4)
DEFAULT_HIDDEN_UNITS = (400, 400, 400)


# --------------------------------------------------------------------------------------------------
# shared layers


class FeatureEmbedding(nn.Module):
    """One embedding table per field: ``forward(x[B, F]) -> [B, F, D]``.

    Each table is ``nn.Embedding(vocab_size, embedding_dim, padding_idx=0)``; rows 1.. are drawn from
    N(0, 1e-4^2) and row 0 (``__PAD__``) is zero and receives no gradient. ``.tables`` lists them in
    field order.
    """

    def __init__(self, vocab_sizes: Sequence[int], embedding_dim: int, init_std: float = EMBEDDING_INIT_STD):
        super().__init__()
        vocab_sizes = [int(v) for v in vocab_sizes]
        if not vocab_sizes:
            raise ValueError("FeatureEmbedding needs at least one field (vocab_sizes is empty)")
        bad = [(i, v) for i, v in enumerate(vocab_sizes) if v < 1]
        if bad:
            raise ValueError(f"vocab sizes must be >= 1 (index 0 is the padding row); got {bad} as (field, size)")
        if int(embedding_dim) < 1:
            raise ValueError(f"embedding_dim must be >= 1, got {embedding_dim}")
        self.vocab_sizes = vocab_sizes
        self.embedding_dim = int(embedding_dim)
        self.tables = nn.ModuleList(nn.Embedding(v, self.embedding_dim, padding_idx=0) for v in vocab_sizes)
        self.reset_parameters(init_std)

    @property
    def num_fields(self) -> int:
        return len(self.tables)

    def reset_parameters(self, std: float = EMBEDDING_INIT_STD) -> None:
        with torch.no_grad():
            for t in self.tables:
                t.weight[1:].normal_(0.0, std)
                t.weight[0].zero_()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 2 or x.shape[1] != self.num_fields:
            raise ValueError(f"expected ids of shape [B, {self.num_fields}], got {tuple(x.shape)}")
        return torch.stack([t(x[:, i]) for i, t in enumerate(self.tables)], dim=1)


_ACTIVATIONS = {
    "relu": nn.ReLU, "tanh": nn.Tanh, "sigmoid": nn.Sigmoid, "leaky_relu": nn.LeakyReLU,
    "leakyrelu": nn.LeakyReLU, "gelu": nn.GELU, "silu": nn.SiLU, "elu": nn.ELU, "prelu": nn.PReLU,
}


def _activation(name: str | None) -> nn.Module | None:
    if name is None or str(name).lower() in ("", "none", "linear", "identity"):
        return None
    key = str(name).lower()
    if key not in _ACTIVATIONS:
        raise ValueError(f"unknown activation {name!r}; known: {sorted(_ACTIVATIONS)}")
    return _ACTIVATIONS[key]()


class MLP(nn.Module):
    """FuxiCTR's ``MLP_Block``: per hidden layer Linear -> [BatchNorm1d] -> activation -> [Dropout],
    then an optional output ``Linear(hidden_units[-1], output_dim)`` with no activation."""

    def __init__(self, input_dim: int, hidden_units: Sequence[int] = (), activation: str = "relu",
                 dropout: float = 0.0, batch_norm: bool = False, output_dim: int | None = None):
        super().__init__()
        dims = [int(input_dim)] + [int(h) for h in hidden_units]
        layers: list[nn.Module] = []
        for d_in, d_out in zip(dims[:-1], dims[1:]):
            layers.append(nn.Linear(d_in, d_out))
            if batch_norm:
                layers.append(nn.BatchNorm1d(d_out))
            act = _activation(activation)
            if act is not None:
                layers.append(act)
            if dropout > 0:
                layers.append(nn.Dropout(p=float(dropout)))
        if output_dim is not None:
            layers.append(nn.Linear(dims[-1], int(output_dim)))
        self.output_dim = int(output_dim) if output_dim is not None else dims[-1]
        self.mlp = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.mlp(x)


def fm_second_order(emb: torch.Tensor) -> torch.Tensor:
    """FM pairwise term of ``emb[B, F, D]``: sum_{i<j} <e_i, e_j> = 0.5 * sum_d((sum_i e)^2 - sum_i e^2) -> [B]."""
    square_of_sum = emb.sum(dim=1).pow(2)
    sum_of_square = emb.pow(2).sum(dim=1)
    return 0.5 * (square_of_sum - sum_of_square).sum(dim=-1)


class InnerProductInteraction(nn.Module):
    """All pairwise inner products <e_i, e_j>, i < j, of ``emb[B, F, D]`` -> ``[B, F(F-1)/2]``, ordered
    (0,1), (0,2), ..., (1,2), ... (row-major upper triangle, as FuxiCTR's masked triu)."""

    def __init__(self, num_fields: int):
        super().__init__()
        self.num_fields = int(num_fields)
        iu = torch.triu_indices(self.num_fields, self.num_fields, offset=1)
        self.register_buffer("rows", iu[0], persistent=False)
        self.register_buffer("cols", iu[1], persistent=False)

    @property
    def output_dim(self) -> int:
        return self.num_fields * (self.num_fields - 1) // 2

    def forward(self, emb: torch.Tensor) -> torch.Tensor:
        gram = torch.bmm(emb, emb.transpose(1, 2))      # [B, F, F]
        return gram[:, self.rows, self.cols]


class CrossNet(nn.Module):
    """DCN's cross network: x_{l+1} = x0 * (x_l^T w_l) + b_l + x_l, ``num_layers`` times, on ``x0[B, d]``.

    ``w_l`` is ``nn.Linear(d, 1, bias=False)`` (Xavier-normal via the model's reset), ``b_l`` starts at 0.
    """

    def __init__(self, input_dim: int, num_layers: int):
        super().__init__()
        self.weights = nn.ModuleList(nn.Linear(input_dim, 1, bias=False) for _ in range(num_layers))
        self.biases = nn.ParameterList(nn.Parameter(torch.zeros(input_dim)) for _ in range(num_layers))

    def forward(self, x0: torch.Tensor) -> torch.Tensor:
        x = x0
        for w, b in zip(self.weights, self.biases):
            x = x0 * w(x) + b + x
        return x


class CrossNetV2(nn.Module):
    """DCNv2's full-rank cross network: x_{l+1} = x0 * (W_l x_l + b_l) + x_l on ``x0[B, d]``."""

    def __init__(self, input_dim: int, num_layers: int):
        super().__init__()
        self.layers = nn.ModuleList(nn.Linear(input_dim, input_dim) for _ in range(num_layers))

    def forward(self, x0: torch.Tensor) -> torch.Tensor:
        x = x0
        for lin in self.layers:
            x = x + x0 * lin(x)
        return x


class CrossNetMix(nn.Module):
    """DCNv2's mixture of low-rank cross experts (FuxiCTR ``CrossNetMix``), on ``x0[B, d]``.

    Per layer l and expert e: ``E_e(x) = x0 * (U_le tanh(C_le tanh(V_le^T x)) + b_l)``; the experts are
    mixed with ``softmax_e(g_e^T x)`` (gates ``g_e`` shared by all layers, no bias) and added to x.
    U, V: [experts, d, rank], C: [experts, rank, rank], Xavier-normal on those shapes; b_l = 0.
    """

    def __init__(self, input_dim: int, num_layers: int, low_rank: int = 32, num_experts: int = 4):
        super().__init__()
        d, r, k = int(input_dim), int(low_rank), int(num_experts)

        def xavier(*shape):
            return nn.Parameter(nn.init.xavier_normal_(torch.empty(*shape)))

        self.U = nn.ParameterList(xavier(k, d, r) for _ in range(num_layers))
        self.V = nn.ParameterList(xavier(k, d, r) for _ in range(num_layers))
        self.C = nn.ParameterList(xavier(k, r, r) for _ in range(num_layers))
        self.biases = nn.ParameterList(nn.Parameter(torch.zeros(d)) for _ in range(num_layers))
        self.gating = nn.ModuleList(nn.Linear(d, 1, bias=False) for _ in range(k))   # one gate per expert

    def forward(self, x0: torch.Tensor) -> torch.Tensor:
        x = x0
        for U, V, C, b in zip(self.U, self.V, self.C, self.biases):
            gate = torch.softmax(torch.cat([g(x) for g in self.gating], dim=-1), dim=-1)   # [B, k]
            v = torch.tanh(torch.einsum("bd,kdr->bkr", x, V))            # [B, k, r]
            v = torch.tanh(torch.einsum("krs,bks->bkr", C, v))           # [B, k, r]
            uv = torch.einsum("kdr,bkr->bkd", U, v)                      # [B, k, d]
            experts = x0.unsqueeze(1) * (uv + b)                         # [B, k, d]
            x = x + torch.einsum("bkd,bk->bd", experts, gate)
        return x


class FieldGate(nn.Module):
    """Field-wise gated embedding encoder (GEN of the LLM-CTR seed): ``E[B, F, D] -> E * g[..., None]``
    with one gate per field computed from all embeddings, ``g = sigmoid(W flatten(E) + b)``,
    ``W: F*D -> F``.

    Initialisation: W is Xavier-normal (the model-wide Linear init) and the bias is ``+3`` (``init_bias``),
    so an untrained gate is sigmoid(3) ~= 0.953 for every field (FuxiCTR-sized embeddings, std 1e-4, make
    W flatten(E) negligible): the encoder starts as a near-identity that only slightly shrinks the
    embeddings, while the sigmoid is not so saturated (slope ~0.045) that the gate cannot learn.
    """

    def __init__(self, num_fields: int, embedding_dim: int, init_bias: float = 3.0):
        super().__init__()
        self.num_fields, self.embedding_dim = int(num_fields), int(embedding_dim)
        self.init_bias = float(init_bias)
        self.proj = nn.Linear(self.num_fields * self.embedding_dim, self.num_fields)
        self.init_weights()

    def init_weights(self) -> None:
        nn.init.xavier_normal_(self.proj.weight)
        nn.init.constant_(self.proj.bias, self.init_bias)

    def gate(self, emb: torch.Tensor) -> torch.Tensor:
        """The gates ``[B, F]`` in (0, 1)."""
        return torch.sigmoid(self.proj(emb.flatten(start_dim=1)))

    def forward(self, emb: torch.Tensor) -> torch.Tensor:
        return emb * self.gate(emb).unsqueeze(-1)


# --------------------------------------------------------------------------------------------------
# models


class CTRModel(nn.Module):
    """Base of the zoo: holds ``embedding`` (and optionally ``first_order``), the constructor config, the
    parameter split used by the training loop, and FuxiCTR's network initialisation."""

    name: str = ""

    def __init__(self, vocab_sizes: Sequence[int], embedding_dim: int = 16,
                 hidden_units: Sequence[int] = DEFAULT_HIDDEN_UNITS, dropout: float = 0.0,
                 batch_norm: bool = False, *, first_order: bool = False, **model_specific):
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
        self.config = {
            "name": self.name, "vocab_sizes": list(self.vocab_sizes), "embedding_dim": self.embedding_dim,
            "hidden_units": list(self.hidden_units), "dropout": self.dropout, "batch_norm": self.batch_norm,
            **model_specific,
        }
        self.embedding = FeatureEmbedding(self.vocab_sizes, self.embedding_dim)
        self.first_order = FeatureEmbedding(self.vocab_sizes, 1) if first_order else None

    @property
    def num_fields(self) -> int:
        return len(self.vocab_sizes)

    def _mlp(self, input_dim: int, hidden_units: Sequence[int] | None = None, output_dim: int | None = None) -> MLP:
        units = self.hidden_units if hidden_units is None else hidden_units
        return MLP(input_dim, units, "relu", self.dropout, self.batch_norm, output_dim=output_dim)

    def _reset_net(self) -> None:
        """FuxiCTR's BaseModel.reset_parameters: Xavier-normal Linear weights, zero biases, then hooks."""
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.xavier_normal_(m.weight)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
        for m in self.modules():
            if m is not self and hasattr(m, "init_weights"):
                m.init_weights()

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


class DNN(CTRModel):
    """MLP over the flattened field embeddings -> 1 logit."""

    name = "dnn"

    def __init__(self, vocab_sizes, embedding_dim=16, hidden_units=DEFAULT_HIDDEN_UNITS, dropout=0.0,
                 batch_norm=False):
        super().__init__(vocab_sizes, embedding_dim, hidden_units, dropout, batch_norm)
        self.mlp = self._mlp(self.num_fields * self.embedding_dim, output_dim=1)
        self._reset_net()

    def forward(self, x):
        return self.mlp(self.embedding(x).flatten(start_dim=1)).squeeze(-1)


class WideDeep(CTRModel):
    """First-order LR term (no bias) + MLP over the flattened embeddings -> 1, summed."""

    name = "widedeep"

    def __init__(self, vocab_sizes, embedding_dim=16, hidden_units=DEFAULT_HIDDEN_UNITS, dropout=0.0,
                 batch_norm=False):
        super().__init__(vocab_sizes, embedding_dim, hidden_units, dropout, batch_norm, first_order=True)
        self.mlp = self._mlp(self.num_fields * self.embedding_dim, output_dim=1)
        self._reset_net()

    def forward(self, x):
        deep = self.mlp(self.embedding(x).flatten(start_dim=1)).squeeze(-1)
        return self._first_order_logit(x) + deep


class PNN(CTRModel):
    """Inner-product PNN: [flattened embeddings, F(F-1)/2 inner products] -> MLP -> 1."""

    name = "pnn"

    def __init__(self, vocab_sizes, embedding_dim=16, hidden_units=DEFAULT_HIDDEN_UNITS, dropout=0.0,
                 batch_norm=False):
        super().__init__(vocab_sizes, embedding_dim, hidden_units, dropout, batch_norm)
        self.inner_product = InnerProductInteraction(self.num_fields)
        self.mlp = self._mlp(self.num_fields * self.embedding_dim + self.inner_product.output_dim, output_dim=1)
        self._reset_net()

    def forward(self, x):
        emb = self.embedding(x)
        h = torch.cat([emb.flatten(start_dim=1), self.inner_product(emb)], dim=1)
        return self.mlp(h).squeeze(-1)


class DeepFM(CTRModel):
    """First-order LR (with bias) + FM second-order term + MLP over flattened embeddings, summed.

    ``encoder="gated"`` puts a :class:`FieldGate` between the embedding lookup and the FM/MLP parts.
    """

    name = "deepfm"
    ENCODERS = ("none", "gated")

    def __init__(self, vocab_sizes, embedding_dim=16, hidden_units=DEFAULT_HIDDEN_UNITS, dropout=0.0,
                 batch_norm=False, encoder: str = "none"):
        if encoder not in self.ENCODERS:
            raise ValueError(f"DeepFM encoder={encoder!r} is not supported; choose one of {list(self.ENCODERS)}")
        super().__init__(vocab_sizes, embedding_dim, hidden_units, dropout, batch_norm, first_order=True,
                         encoder=encoder)
        self.encoder_type = encoder
        self.encoder = FieldGate(self.num_fields, self.embedding_dim) if encoder == "gated" else None
        self.lr_bias = nn.Parameter(torch.zeros(1))
        self.mlp = self._mlp(self.num_fields * self.embedding_dim, output_dim=1)
        self._reset_net()

    def forward(self, x):
        emb = self.embedding(x)
        if self.encoder is not None:
            emb = self.encoder(emb)
        lr = self._first_order_logit(x) + self.lr_bias
        deep = self.mlp(emb.flatten(start_dim=1)).squeeze(-1)
        return lr + fm_second_order(emb) + deep


class DCN(CTRModel):
    """CrossNet in parallel with an MLP over the flattened embeddings; [cross, dnn] -> Linear -> 1.
    ``hidden_units=[]`` drops the MLP (crossnet-only DCN)."""

    name = "dcn"

    def __init__(self, vocab_sizes, embedding_dim=16, hidden_units=DEFAULT_HIDDEN_UNITS, dropout=0.0,
                 batch_norm=False, num_cross_layers: int = 3):
        if int(num_cross_layers) < 0:
            raise ValueError(f"num_cross_layers must be >= 0, got {num_cross_layers}")
        super().__init__(vocab_sizes, embedding_dim, hidden_units, dropout, batch_norm,
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


class DLRM(CTRModel):
    """DLRM without dense features: ``dot`` -> the F(F-1)/2 pairwise dot products, ``cat`` -> the flattened
    embeddings; then the top MLP -> 1."""

    name = "dlrm"
    INTERACTIONS = ("dot", "cat")

    def __init__(self, vocab_sizes, embedding_dim=16, hidden_units=DEFAULT_HIDDEN_UNITS, dropout=0.0,
                 batch_norm=False, top_mlp_units: Sequence[int] | None = None, interaction_op: str = "dot"):
        if interaction_op not in self.INTERACTIONS:
            raise ValueError(f"DLRM interaction_op={interaction_op!r} is not supported; "
                             f"choose one of {list(self.INTERACTIONS)}")
        top = list(hidden_units) if top_mlp_units is None else list(top_mlp_units)
        top = [int(h) for h in top]
        super().__init__(vocab_sizes, embedding_dim, hidden_units, dropout, batch_norm,
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


class DCNv2(CTRModel):
    """CrossNetV2 (or CrossNetMix) + MLP in FuxiCTR's structures, then Linear -> 1."""

    name = "dcnv2"
    STRUCTURES = ("parallel", "stacked", "crossnet_only", "stacked_parallel")

    def __init__(self, vocab_sizes, embedding_dim=16, hidden_units=DEFAULT_HIDDEN_UNITS, dropout=0.0,
                 batch_norm=False, num_cross_layers: int = 3, model_structure: str = "parallel",
                 use_low_rank_mixture: bool = False, low_rank: int = 32, num_experts: int = 4):
        if model_structure not in self.STRUCTURES:
            raise ValueError(f"DCNv2 model_structure={model_structure!r} is not supported; "
                             f"choose one of {list(self.STRUCTURES)}")
        if int(num_cross_layers) < 0 or int(low_rank) < 1 or int(num_experts) < 1:
            raise ValueError(f"DCNv2 needs num_cross_layers >= 0, low_rank >= 1, num_experts >= 1; got "
                             f"{num_cross_layers}, {low_rank}, {num_experts}")
        super().__init__(vocab_sizes, embedding_dim, hidden_units, dropout, batch_norm,
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
# registry


MODELS: dict[str, type[CTRModel]] = {
    "dnn": DNN, "widedeep": WideDeep, "pnn": PNN, "deepfm": DeepFM, "dcn": DCN, "dlrm": DLRM, "dcnv2": DCNv2,
}


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
