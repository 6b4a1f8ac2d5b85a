"""The CTR model zoo (pipeline.ctr.models, pipeline.ctr.layers): shapes, gradient flow, the interaction
layers against explicit formulas, the gated and GEN encoders, the registry/config round trip, the embedding/net
parameter split, the ``ctr`` params section (CtrParams) and the extension point (a model registered here,
in the test, is buildable and valid in params without touching any other file)."""

from __future__ import annotations

import copy
import dataclasses
import itertools
import json
from pathlib import Path
from typing import Literal

import pytest
import torch
import yaml
from torch import nn

from pipeline.core.errors import ConfigError
from pipeline.core.params import from_mapping, load_stage
from pipeline.ctr import models
from pipeline.ctr.layers import (
    MLP, CrossNet, CrossNetMix, CrossNetV2, FeatureEmbedding, FieldGate, GenEncoder, InnerProductInteraction,
    fm_second_order, gen_fm_second_order,
)
from pipeline.ctr.models import (
    MODELS, CtrParams, CTRModel, ModelOptions, build_ctr_model, build_model, model_config, register,
)

PARAMS_YAML = Path(__file__).resolve().parents[1] / "params.yaml"

VOCAB = [7, 5, 9, 3]
F, D, H, B = len(VOCAB), 4, [8, 8], 5
SMALL = dict(embedding_dim=D, hidden_units=H)
# The gradient test uses wider layers: with FuxiCTR's tiny embedding init, zero biases and ReLU, a sample
# whose 8 hidden units all come out negative is legitimately dead (no gradient to its rows); with 32 units
# per layer that has probability ~2^-32 instead of ~2^-8.
WIDE = [32, 32]

CASES = {
    "dnn": ("dnn", {}),
    "dnn-bn-dropout": ("dnn", dict(batch_norm=True, dropout=0.1)),
    "widedeep": ("widedeep", {}),
    "pnn": ("pnn", {}),
    "deepfm": ("deepfm", {}),
    "deepfm-gated": ("deepfm", dict(encoder="gated")),
    "deepfm-gen": ("deepfm", dict(encoder="gen")),
    "dcn": ("dcn", dict(num_cross_layers=2)),
    "dcn-crossnet-only": ("dcn", dict(hidden_units=[])),
    "dlrm-dot": ("dlrm", dict(interaction_op="dot")),
    "dlrm-cat": ("dlrm", dict(interaction_op="cat", top_mlp_units=[32, 24])),
    **{f"dcnv2-{s}": ("dcnv2", dict(model_structure=s))
       for s in ("parallel", "stacked", "crossnet_only", "stacked_parallel")},
    "dcnv2-lowrank": ("dcnv2", dict(use_low_rank_mixture=True, low_rank=3, num_experts=2)),
    "dcnv2-lowrank-stacked": ("dcnv2", dict(use_low_rank_mixture=True, low_rank=3, num_experts=2,
                                             model_structure="stacked")),
}


def make(case: str, seed: int = 0, hidden_units=None):
    name, kw = CASES[case]
    torch.manual_seed(seed)
    base = dict(SMALL, hidden_units=hidden_units) if hidden_units is not None else SMALL
    return build_model(name, VOCAB, **{**base, **kw})


def batch(seed: int = 1) -> torch.Tensor:
    """B x F ids; field 0 has a padding id (0) in row 0 so the padding row is exercised."""
    g = torch.Generator().manual_seed(seed)
    x = torch.stack([torch.randint(1, v, (B,), generator=g) for v in VOCAB], dim=1)
    x[0, 0] = 0
    return x


@pytest.mark.parametrize("case", list(CASES))
def test_forward_backward_reaches_embeddings_and_net(case):
    model = make(case, hidden_units=WIDE)
    model.train()
    x = batch()
    logits = model(x)
    assert logits.shape == (B,) and logits.dtype == torch.float32
    assert torch.isfinite(logits).all()
    # all-positive labels: with near-zero logits, duplicate rows with opposite labels would cancel exactly
    y = torch.ones(B)
    nn.functional.binary_cross_entropy_with_logits(logits, y).backward()

    for group, tables in model.embedding_groups().items():
        assert len(tables) == F
        for f, table in enumerate(tables):
            grad = table.weight.grad
            assert grad is not None, (group, f)
            used = set(x[:, f].tolist()) - {0}
            for row in range(table.num_embeddings):
                nonzero = bool(grad[row].abs().sum() > 0)
                assert nonzero == (row in used), (group, f, row, used)
            assert torch.all(grad[0] == 0)
    for pname, p in model.named_parameters():
        if any(p is q for q in model.embedding_parameters()):
            continue
        assert p.grad is not None and p.grad.abs().sum() > 0, f"{case}: no gradient for {pname}"


def test_logits_are_not_squashed_and_int32_ids_work():
    model = make("dnn")
    with torch.no_grad():
        model.mlp.mlp[-1].bias.fill_(5.0)
        out = model(batch().to(torch.int32))
    assert out.shape == (B,) and (out > 1.0).all()          # a sigmoid output could never exceed 1


def test_batch_of_one_in_eval_mode():
    for case in ("dcnv2-lowrank", "dcn", "dlrm-dot", "dnn-bn-dropout"):
        model = make(case).eval()
        assert model(batch()[:1]).shape == (1,)


def test_feature_embedding_layout_and_init():
    torch.manual_seed(0)
    emb = FeatureEmbedding([1000, 3, 50], 8)
    assert [t.num_embeddings for t in emb.tables] == [1000, 3, 50]
    assert all(isinstance(t, nn.Embedding) and t.padding_idx == 0 and t.embedding_dim == 8 for t in emb.tables)
    for t in emb.tables:
        assert torch.all(t.weight[0] == 0)
    std = emb.tables[0].weight[1:].std().item()
    assert 0.8e-4 < std < 1.2e-4
    x = torch.tensor([[0, 2, 49], [999, 1, 0]])
    out = emb(x)
    assert out.shape == (2, 3, 8)
    assert torch.equal(out[1, 0], emb.tables[0].weight[999]) and torch.all(out[0, 0] == 0)
    with pytest.raises(ValueError):
        emb(torch.zeros(2, 4, dtype=torch.long))
    with pytest.raises(ValueError):
        FeatureEmbedding([5, 0], 4)


def test_fm_term_equals_pairwise_sum():
    torch.manual_seed(3)
    e = torch.randn(6, 5, 3)
    expected = torch.zeros(6)
    for i, j in itertools.combinations(range(5), 2):
        expected += (e[:, i] * e[:, j]).sum(-1)
    assert torch.allclose(fm_second_order(e), expected, atol=1e-5)



def _trained_looking(model):
    """Give ``model`` trained-looking embeddings (the init is 1e-4); return a batch, its embeddings and the
    LR term (first order + bias) of the DeepFM variants."""
    for t in model.embedding_tables():
        t.weight[1:].normal_(0, 0.3)
    x = batch()
    return x, model.embedding(x), model.first_order(x).sum((1, 2)) + model.lr_bias


def test_deepfm_logit_is_lr_plus_fm_plus_dnn():
    model = make("deepfm").eval()
    with torch.no_grad():
        x, emb, lr = _trained_looking(model)
        expected = lr + fm_second_order(emb) + model.mlp(emb.flatten(1)).squeeze(-1)
        assert torch.allclose(model(x), expected, atol=1e-6)


def test_inner_products_equal_double_loop():
    torch.manual_seed(4)
    e = torch.randn(3, 5, 4)
    out = InnerProductInteraction(5)(e)
    expected = torch.stack([(e[:, i] * e[:, j]).sum(-1) for i in range(5) for j in range(i + 1, 5)], dim=1)
    assert out.shape == (3, 10)
    assert torch.allclose(out, expected, atol=1e-6)
    assert not list(InnerProductInteraction(5).parameters())
    assert not InnerProductInteraction(5).state_dict()


def test_interaction_input_sizes():
    pnn, dot, cat = make("pnn"), make("dlrm-dot"), make("dlrm-cat")
    assert pnn.mlp.mlp[0].in_features == F * D + F * (F - 1) // 2
    assert dot.top_mlp.mlp[0].in_features == F * (F - 1) // 2
    assert cat.top_mlp.mlp[0].in_features == F * D and cat.top_mlp.mlp[-1].in_features == 24
    assert make("dlrm-dot").config["top_mlp_units"] == H        # defaults to hidden_units
    fc_in = {s: make(f"dcnv2-{s}").fc.in_features for s in ("parallel", "stacked", "crossnet_only", "stacked_parallel")}
    assert fc_in == {"parallel": F * D + H[-1], "stacked": H[-1], "crossnet_only": F * D, "stacked_parallel": 2 * H[-1]}
    assert make("dcn").fc.in_features == F * D + H[-1] and make("dcn-crossnet-only").fc.in_features == F * D


def test_crossnet_layers_by_hand():
    x0 = torch.tensor([[1.0, 2.0, -1.0], [0.5, 0.0, 3.0]])
    net = CrossNet(3, 1)
    w, b = torch.tensor([0.2, -0.1, 0.4]), torch.tensor([0.01, 0.02, -0.03])
    with torch.no_grad():
        net.weights[0].weight.copy_(w[None])
        net.biases[0].copy_(b)
    expected = x0 * (x0 @ w)[:, None] + b + x0
    assert torch.allclose(net(x0), expected, atol=1e-6)
    # two layers compose: x2 = x0 * (x1 . w) + b + x1
    net2 = CrossNet(3, 2)
    with torch.no_grad():
        for lw, lb in zip(net2.weights, net2.biases):
            lw.weight.copy_(w[None]); lb.copy_(b)
    x1 = expected
    assert torch.allclose(net2(x0), x0 * (x1 @ w)[:, None] + b + x1, atol=1e-6)


def test_crossnet_v2_layer_by_hand():
    torch.manual_seed(5)
    x0 = torch.randn(4, 3)
    net = CrossNetV2(3, 1)
    W, b = net.layers[0].weight.detach(), net.layers[0].bias.detach()
    assert torch.allclose(net(x0), x0 * (x0 @ W.T + b) + x0, atol=1e-6)


def test_crossnet_mix_matches_per_expert_loop():
    torch.manual_seed(6)
    d, r, k, L = 5, 3, 2, 2
    net = CrossNetMix(d, L, low_rank=r, num_experts=k)
    with torch.no_grad():
        for bias in net.biases:
            bias.normal_()
    x0 = torch.randn(3, d)
    x = x0
    for l in range(L):
        outs, scores = [], []
        for e in range(k):
            scores.append(x @ net.gating[e].weight[0])
            v = torch.tanh(x @ net.V[l][e])                     # V^T x
            v = torch.tanh(v @ net.C[l][e].T)                   # C v
            outs.append(x0 * (v @ net.U[l][e].T + net.biases[l]))
        gate = torch.softmax(torch.stack(scores, 1), dim=1)
        x = x + sum(gate[:, e:e + 1] * outs[e] for e in range(k))
    assert torch.allclose(net(x0), x, atol=1e-5)
    assert net.U[0].shape == (k, d, r) and net.C[0].shape == (k, r, r)


def test_field_gate():
    torch.manual_seed(7)
    gate = FieldGate(F, D)
    e = torch.randn(B, F, D)
    g = gate.gate(e)
    assert g.shape == (B, F) and torch.all((g > 0) & (g < 1))
    out = gate(e)
    assert out.shape == e.shape
    assert torch.allclose(out, e * g[..., None], atol=1e-7)
    # near-identity at init on FuxiCTR-sized embeddings: every gate ~ sigmoid(3) ~ 0.953
    small = torch.randn(B, F, D) * 1e-4
    g0 = gate.gate(small)
    assert torch.allclose(g0, torch.full_like(g0, torch.sigmoid(torch.tensor(3.0)).item()), atol=1e-3)
    assert torch.allclose(gate(small), small, rtol=0.06, atol=0)
    # the model-wide reset keeps the gate's +3 bias
    model = make("deepfm-gated")
    assert torch.all(model.encoder.proj.bias == 3.0)
    assert make("deepfm").encoder is None


def test_gated_deepfm_is_the_formula_it_always_was():
    """encoder="gated" (the default baseline before GEN) keeps its numbers: the same ops as before GEN was added,
    bit for bit (gate the embeddings, then LR + FM + MLP all on the gated embeddings)."""
    model = make("deepfm-gated").eval()
    with torch.no_grad():
        for t in model.embedding_tables():
            t.weight[1:].normal_(0, 0.3)
        x = batch()
        gated = model.encoder(model.embedding(x))
        lr = model.first_order(x).sum((1, 2)) + model.lr_bias
        expected = lr + fm_second_order(gated) + model.mlp(gated.flatten(1)).squeeze(-1)
        assert torch.equal(model(x), expected)
    assert isinstance(model.encoder, FieldGate) and set(model.encoder.state_dict()) == {"proj.weight", "proj.bias"}


def test_gen_encoder_formula_no_bias_and_init():
    torch.manual_seed(8)
    gen = GenEncoder(F, D)
    assert gen.proj.bias is None and set(gen.state_dict()) == {"proj.weight", "scale"}
    assert gen.proj.weight.shape == (F * D, F * D) and gen.scale.shape == (1,) and gen.scale.item() == 1.0
    assert gen.scale.requires_grad                                     # the scale is learnable
    e = torch.randn(B, F, D)
    out = gen(e)
    assert out.shape == (B, F, D)
    with torch.no_grad():
        gen.scale.fill_(0.5)
    by_hand = (torch.relu(e.reshape(B, F * D) @ gen.proj.weight.T) * 0.5).reshape(B, F, D)
    assert torch.allclose(gen(e), by_hand, atol=1e-6)
    assert torch.equal(gen(torch.zeros(B, F, D)), torch.zeros(B, F, D))   # no bias: zero in, zero out
    # Xavier-normal W (std 1/sqrt(F*D) for the square matrix): an untrained GEN keeps the embeddings'
    # scale, RMS ~ RMS(E)/sqrt(2) after the ReLU
    torch.manual_seed(9)
    wide = GenEncoder(12, 16)
    assert abs(wide.proj.weight.std().item() * (12 * 16) ** 0.5 - 1.0) < 0.05
    small = torch.randn(256, 12, 16) * 1e-4
    ratio = wide(small).pow(2).mean().sqrt() / small.pow(2).mean().sqrt()
    assert abs(ratio.item() - 2 ** -0.5) < 0.05
    # the model-wide reset leaves W Xavier-normal and the scale at 1
    model = make("deepfm-gen")
    assert isinstance(model.encoder, GenEncoder) and model.encoder.scale.item() == 1.0


def test_gen_mixes_every_field():
    """Output field 0 depends on input field 3 (and every output on every input): W is a full matrix."""
    torch.manual_seed(10)
    gen = GenEncoder(F, D)
    e = torch.rand(B, F, D).add_(0.1).requires_grad_(True)
    gen(e)[:, 0].sum().backward()
    assert e.grad[:, 3].abs().sum() > 0 and all(e.grad[:, f].abs().sum() > 0 for f in range(F))
    for out_field in range(F):                                    # [out field, in field] blocks all non-zero
        grad, = torch.autograd.grad(gen(e)[:, out_field].sum(), e)
        assert torch.all(grad.abs().sum(dim=(0, 2)) > 0), out_field


def test_gen_fm_term_is_the_ordered_cross_pairs():
    torch.manual_seed(11)
    g, e = torch.randn(6, 5, 3), torch.randn(6, 5, 3)
    ordered = torch.zeros(6)
    for i, j in itertools.combinations(range(5), 2):
        ordered += (g[:, i] * e[:, j]).sum(-1)                    # <g_i, e_j>, i < j
    assert torch.allclose(gen_fm_second_order(g, e), ordered, atol=1e-5)
    symmetric = 0.5 * ((g.sum(1) * e.sum(1)).sum(-1) - (g * e).sum((1, 2)))
    assert not torch.allclose(gen_fm_second_order(g, e), symmetric, atol=1e-3)   # not the symmetric form
    assert torch.allclose(gen_fm_second_order(e, e), fm_second_order(e), atol=1e-5)   # g = e: the plain FM
    # g of the last field and e of the first field have no partner
    g2, e2 = g.clone(), e.clone()
    g2[:, -1] += 5.0
    e2[:, 0] += 5.0
    assert torch.allclose(gen_fm_second_order(g2, e2), gen_fm_second_order(g, e), atol=1e-5)
    with pytest.raises(ValueError):
        gen_fm_second_order(g, e[:, :4])


def test_deepfm_gen_logit_is_lr_plus_gen_fm_plus_dnn_on_raw_embeddings():
    model = make("deepfm-gen").eval()
    with torch.no_grad():
        x, emb, lr = _trained_looking(model)
        deep = model.mlp(emb.flatten(1)).squeeze(-1)                # the MLP reads the RAW embeddings
        expected = lr + gen_fm_second_order(model.encoder(emb), emb) + deep
        assert torch.allclose(model(x), expected, atol=1e-6)
        model.encoder.scale.zero_()                                # GEN off: only the FM term goes
        assert torch.allclose(model(x), lr + deep, atol=1e-6)


def test_mlp_block_structure():
    mlp = MLP(6, [5, 4], dropout=0.2, batch_norm=True, output_dim=1)
    kinds = [type(m).__name__ for m in mlp.mlp]
    assert kinds == ["Linear", "BatchNorm1d", "ReLU", "Dropout", "Linear", "BatchNorm1d", "ReLU", "Dropout", "Linear"]
    assert MLP(6, [5]).output_dim == 5


@pytest.mark.parametrize("case", list(CASES))
def test_config_round_trip_and_parameter_partition(case):
    model = make(case)
    cfg = json.loads(json.dumps(model_config(model)))
    assert cfg["name"] == CASES[case][0] and cfg["vocab_sizes"] == VOCAB
    torch.manual_seed(123)
    rebuilt = build_model(**cfg)
    assert type(rebuilt) is type(model) and model_config(rebuilt) == cfg
    shapes = lambda m: [(n, tuple(p.shape)) for n, p in m.named_parameters()]
    assert shapes(rebuilt) == shapes(model)
    rebuilt.load_state_dict(model.state_dict())
    x = batch()
    model.eval(); rebuilt.eval()
    assert torch.equal(model(x), rebuilt(x))

    emb = [p for t in model.embedding_tables() for p in t.parameters()]
    net = list(model.net_parameters())
    ids = lambda ps: [id(p) for p in ps]
    assert not set(ids(emb)) & set(ids(net))
    assert sorted(ids(emb) + ids(net)) == sorted(ids(model.parameters()))
    assert len(ids(emb)) == len(set(ids(emb))) and len(ids(net)) == len(set(ids(net)))
    assert all(isinstance(t, nn.Embedding) for t in model.embedding_tables())
    n_groups = 2 if CASES[case][0] in ("deepfm", "widedeep") else 1
    assert len(model.embedding_tables()) == n_groups * F


def test_first_order_groups():
    for name in ("deepfm", "widedeep"):
        groups = make(name).embedding_groups()
        assert set(groups) == {"embedding", "first_order"}
        assert all(t.embedding_dim == 1 for t in groups["first_order"])
        assert [t.num_embeddings for t in groups["first_order"]] == VOCAB
    assert set(make("pnn").embedding_groups()) == {"embedding"}


def test_build_model_errors():
    with pytest.raises(ValueError, match=r"'xdeepfm'.*dcnv2"):
        build_model("xdeepfm", VOCAB)
    with pytest.raises(ValueError, match="num_cross_layers"):
        build_model("deepfm", VOCAB, num_cross_layers=2)
    with pytest.raises(ValueError, match="bottom_mlp_units"):
        build_model("dlrm", VOCAB, bottom_mlp_units=[4])
    with pytest.raises(ValueError, match="model_structure"):
        build_model("dcnv2", VOCAB, model_structure="serial", **SMALL)
    with pytest.raises(ValueError, match="interaction_op"):
        build_model("dlrm", VOCAB, interaction_op="sum", **SMALL)
    with pytest.raises(ValueError, match="encoder"):
        build_model("deepfm", VOCAB, encoder="transformer", **SMALL)
    with pytest.raises(ValueError, match="hidden_units"):
        build_model("dcnv2", VOCAB, model_structure="stacked", embedding_dim=D, hidden_units=[])
    assert type(build_model("DeepFM", VOCAB, **SMALL)).__name__ == "DeepFM"


def test_defaults():
    model = build_model("dcnv2", VOCAB)
    cfg = model_config(model)
    assert cfg["embedding_dim"] == 16 and cfg["hidden_units"] == [400, 400, 400]
    assert cfg["num_cross_layers"] == 3 and cfg["model_structure"] == "parallel"
    assert cfg["use_low_rank_mixture"] is False and cfg["low_rank"] == 32 and cfg["num_experts"] == 4
    assert model_config(build_model("dlrm", VOCAB))["interaction_op"] == "dot"
    assert model_config(build_model("deepfm", VOCAB))["encoder"] == "none"
    assert model_config(build_model("dcn", VOCAB, hidden_units=[4]))["num_cross_layers"] == 3


@pytest.mark.parametrize("case", list(CASES))
def test_deterministic_construction(case):
    a, b = make(case, seed=0), make(case, seed=0)
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    c = make(case, seed=1)
    assert not all(torch.equal(sa[k], c.state_dict()[k]) for k in sa)


def test_net_init_is_xavier_with_zero_bias():
    model = make("dnn")
    first = model.mlp.mlp[0]
    assert torch.all(first.bias == 0)
    torch.manual_seed(0)
    big = build_model("dnn", [2] * 50, embedding_dim=8, hidden_units=[300])
    w = big.mlp.mlp[0].weight
    expected_std = (2.0 / (w.shape[0] + w.shape[1])) ** 0.5
    assert abs(w.std().item() / expected_std - 1) < 0.05


# --------------------------------------------------------------------------------------------------
# the registry, the ctr params section and the extension point


def ctr_section() -> dict:
    """params.yaml's ``ctr`` section as a mapping (a fresh copy)."""
    return copy.deepcopy(yaml.safe_load(PARAMS_YAML.read_text())["ctr"])


def parse(section: dict) -> CtrParams:
    return from_mapping(CtrParams, section, "ctr").validate()


def test_registry_names_classes_and_options():
    assert list(MODELS) == ["dnn", "widedeep", "pnn", "deepfm", "dcn", "dlrm", "dcnv2"]
    for name, cls in MODELS.items():
        assert cls.name == name and issubclass(cls, CTRModel)
    with_options = {n for n, cls in MODELS.items() if cls.Options is not None}
    assert with_options == {"deepfm", "dcn", "dcnv2", "dlrm"}
    assert [f.name for f in dataclasses.fields(MODELS["dcnv2"].Options)] == ["num_cross_layers", "structure"]
    with pytest.raises(ValueError, match="already registered"):
        register("dnn")(type("Again", (CTRModel,), {}))
    with pytest.raises(ValueError, match="collides"):
        register("dropout")(type("Dropout", (CTRModel,), {}))


@pytest.mark.parametrize("name", list(MODELS))
def test_every_registered_name_builds_from_params_and_round_trips(name):
    section = ctr_section()
    section.update(model=name, embedding_dim=D, hidden_units=H)
    ctr = parse(section)
    torch.manual_seed(0)
    model = build_ctr_model(ctr, VOCAB)
    assert type(model) is MODELS[name] and model(batch()).shape == (B,)
    cfg = json.loads(json.dumps(model_config(model)))
    assert cfg["name"] == name
    torch.manual_seed(1)
    rebuilt = build_model(**cfg)
    assert model_config(rebuilt) == cfg
    rebuilt.load_state_dict(model.state_dict())
    model.eval(); rebuilt.eval()
    assert torch.equal(model(batch()), rebuilt(batch()))


def test_ctr_params_parse_the_params_yaml_section():
    ctr = parse(ctr_section())
    assert (ctr.model, ctr.embedding_dim, ctr.hidden_units, ctr.batch_norm) == ("deepfm", 16, [400, 400, 400], False)
    assert ctr.deepfm == MODELS["deepfm"].Options(encoder="gen") and ctr.options is ctr.deepfm
    assert ctr.dcnv2.structure == "parallel" and ctr.dlrm.interaction == "dot" and ctr.dcn.num_cross_layers == 3
    assert ctr.model_kwargs() == {"embedding_dim": 16, "hidden_units": [400, 400, 400], "dropout": ctr.dropout,
                                  "batch_norm": False, "dropout_impl": "fast", "encoder": "gen"}
    # each model gets its own options only, mapped onto its constructor arguments
    assert ctr.with_model("dcnv2").model_kwargs()["model_structure"] == "parallel"
    assert ctr.with_model("dlrm").model_kwargs()["interaction_op"] == "dot"
    assert "encoder" not in ctr.with_model("dnn").model_kwargs() and ctr.with_model("dnn").options is None
    assert ctr.with_model("deepfm", encoder="none").deepfm.encoder == "none" and ctr.deepfm.encoder == "gen"
    gen = parse({**ctr_section(), "embedding_dim": D, "hidden_units": H, "deepfm": {"encoder": "gen"}})
    assert gen.deepfm == MODELS["deepfm"].Options(encoder="gen") and gen.model_kwargs()["encoder"] == "gen"
    torch.manual_seed(0)
    m = build_ctr_model(gen, VOCAB)
    cfg = json.loads(json.dumps(model_config(m)))
    assert cfg["encoder"] == "gen" and isinstance(m.encoder, GenEncoder)
    rebuilt = build_model(**cfg)
    rebuilt.load_state_dict(m.state_dict())
    assert model_config(rebuilt) == cfg and torch.equal(m.eval()(batch()), rebuilt.eval()(batch()))
    # the same object through the stage machinery, whole or by dotted sub-key
    assert load_stage(PARAMS_YAML, ("ctr",), (CtrParams,)).ctr == ctr
    view = load_stage(PARAMS_YAML, ("ctr.model", "ctr.deepfm.encoder"), (CtrParams,))
    assert (view.ctr.model, view.ctr.deepfm.encoder) == ("deepfm", "gen")


@pytest.mark.parametrize("edit, match", [
    (lambda s: s.update(model="xyz"),
     r"^ctr\.model: 'xyz' is not one of \['dnn', 'widedeep', 'pnn', 'deepfm', 'dcn', 'dlrm', 'dcnv2'\]$"),
    (lambda s: s["dcnv2"].update(structure="serial"), r"^ctr\.dcnv2\.structure: 'serial' is not one of"),
    (lambda s: s["dcnv2"].update(structur="parallel"), r"^ctr\.dcnv2\.structur: unknown key"),
    (lambda s: s["dcn"].pop("num_cross_layers"), r"^ctr\.dcn\.num_cross_layers: missing key"),
    (lambda s: s["dcn"].update(num_cross_layers="3"), r"^ctr\.dcn\.num_cross_layers: expected an integer"),
    (lambda s: s["dcn"].update(num_cross_layers=-1),
     r"^ctr\.dcn\.num_cross_layers: -1 is out of range \(expected \[0, inf\)\)$"),
    (lambda s: s.update(dlrm="dot"), r"^ctr\.dlrm: expected a mapping"),
    (lambda s: s.pop("deepfm"), r"^ctr\.deepfm: missing key"),
    (lambda s: s.update(encoder="gated"), r"^ctr\.encoder: unknown key"),           # the old flat keys are gone
    (lambda s: s.update(dcnv2_structure="parallel"), r"^ctr\.dcnv2_structure: unknown key"),
    (lambda s: s.update(embedding_dim=0), r"^ctr\.embedding_dim: 0 is out of range \(expected \[1, inf\)\)$"),
    (lambda s: s.update(dropout=1.0), r"^ctr\.dropout: 1\.0 is out of range \(expected \[0, 1\)\)$"),
    (lambda s: s.update(hidden_units=[400, 0]), r"^ctr\.hidden_units\[1\]: 0 is out of range \(expected \[1, inf\)\)$"),
    (lambda s: s.update(batch_norm="no"), r"^ctr\.batch_norm: expected true/false"),
], ids=["unknown-model", "bad-structure", "unknown-sub-key", "missing-sub-key", "mistyped-sub-key",
        "negative-cross-layers", "sub-section-not-mapping", "missing-sub-section", "old-encoder-key",
        "old-dcnv2-key", "embedding-dim", "dropout", "hidden-units", "batch-norm"])
def test_ctr_params_errors_name_the_key(edit, match):
    section = ctr_section()
    edit(section)
    with pytest.raises(ConfigError, match=match):
        parse(section)


@pytest.fixture
def scratch_registry(monkeypatch):
    """MODELS as a copy for one test: what a test registers is gone afterwards."""
    monkeypatch.setattr(models, "MODELS", dict(models.MODELS))
    return models.MODELS


def test_extension_point_a_model_registered_here_builds_and_is_valid_in_params(scratch_registry):
    @register("scaledlr")
    class ScaledLR(CTRModel):
        """A tiny 8th model: the first-order term times a scale, optionally plus a bias."""

        @dataclasses.dataclass(frozen=True)
        class Options(ModelOptions):
            scale: float
            bias: Literal["on", "off"]

            def kwargs(self) -> dict:
                return {"logit_scale": self.scale, "use_bias": self.bias == "on"}

        def __init__(self, vocab_sizes, embedding_dim=16, hidden_units=(), dropout=0.0, batch_norm=False,
                     dropout_impl="torch", logit_scale: float = 1.0, use_bias: bool = False):
            super().__init__(vocab_sizes, embedding_dim, hidden_units, dropout, batch_norm, first_order=True,
                             dropout_impl=dropout_impl, logit_scale=float(logit_scale), use_bias=bool(use_bias))
            self.logit_scale = float(logit_scale)
            self.bias = nn.Parameter(torch.zeros(1)) if use_bias else None
            self._reset_net()

        def forward(self, x):
            out = self.logit_scale * self._first_order_logit(x)
            return out + self.bias if self.bias is not None else out

    assert scratch_registry["scaledlr"] is ScaledLR and ScaledLR.name == "scaledlr"
    section = ctr_section()
    section.update(model="scaledlr", scaledlr={"scale": 2.0, "bias": "on"})
    ctr = parse(section)
    assert ctr.scaledlr == ScaledLR.Options(scale=2.0, bias="on")
    model = build_ctr_model(ctr, VOCAB)
    assert type(model) is ScaledLR and model.logit_scale == 2.0 and model.bias is not None
    assert model(batch()).shape == (B,)
    rebuilt = build_model(**json.loads(json.dumps(model_config(model))))
    assert type(rebuilt) is ScaledLR and model_config(rebuilt) == model_config(model)
    # its sub-section is now part of the ctr section: required and typed like everyone else's
    section.pop("scaledlr")
    with pytest.raises(ConfigError, match=r"^ctr\.scaledlr: missing key"):
        parse(section)
    with pytest.raises(ConfigError, match=r"^ctr\.scaledlr\.bias: 'maybe' is not one of"):
        parse({**section, "scaledlr": {"scale": 2.0, "bias": "maybe"}})
    # the existing models are untouched by the extension
    assert type(build_ctr_model(parse({**section, "model": "deepfm", "scaledlr": {"scale": 1.0, "bias": "off"}}),
                                VOCAB)).__name__ == "DeepFM"


def test_extension_point_a_model_without_options_needs_no_sub_section(scratch_registry):
    @register("lronly")
    class LROnly(CTRModel):
        def __init__(self, vocab_sizes, embedding_dim=16, hidden_units=(), dropout=0.0, batch_norm=False,
                     dropout_impl="torch"):
            super().__init__(vocab_sizes, embedding_dim, hidden_units, dropout, batch_norm, first_order=True,
                             dropout_impl=dropout_impl)

        def forward(self, x):
            return self._first_order_logit(x)

    assert scratch_registry["lronly"] is LROnly and LROnly.Options is None
    ctr = parse({**ctr_section(), "model": "lronly"})
    assert ctr.options is None
    assert type(build_ctr_model(ctr, VOCAB)) is LROnly


def test_extension_is_gone_after_the_test():
    assert "scaledlr" not in MODELS and "lronly" not in MODELS
    with pytest.raises(ConfigError, match="'scaledlr' is not one of"):
        parse({**ctr_section(), "model": "scaledlr"})


def test_a_config_json_written_before_the_split_still_loads():
    """The baseline's config.json format (LLM-CTR rebuilds the baseline from it) is unchanged."""
    old = {"name": "deepfm", "vocab_sizes": VOCAB, "embedding_dim": D, "hidden_units": H, "dropout": 0.1,
           "batch_norm": False, "encoder": "gated"}
    model = build_model(**old)
    # no dropout_impl in it: nn.Dropout, what every model before the key was trained with
    assert type(model).__name__ == "DeepFM" and model.encoder is not None
    assert model_config(model) == {**old, "dropout_impl": "torch"}
    ctr = parse({**ctr_section(), "embedding_dim": D, "hidden_units": H, "dropout": 0.1, "batch_norm": False,
                 "dropout_impl": "torch", "deepfm": {"encoder": "gated"}})
    assert model_config(build_ctr_model(ctr, VOCAB)) == {**old, "dropout_impl": "torch"}


# --------------------------------------------------------------------------------------------------
# FastDropout (ctr.dropout_impl: fast)


@pytest.mark.parametrize("p", [0.1, 0.2, 0.5])
def test_fast_dropout_keeps_each_element_with_probability_1_minus_p_and_scales(p):
    from pipeline.ctr.layers import FastDropout
    torch.manual_seed(0)
    layer = FastDropout(p).train()
    x = torch.rand(2000, 517) + 0.5                     # odd width: the last 64-bit word is part-used
    y = layer(x)
    kept = y != 0
    n = kept.numel()
    rate = kept.float().mean().item()
    sd = (p * (1 - p) / n) ** 0.5
    assert abs(rate - (1 - p)) < 5 * sd                # the keep law, to 5 standard errors
    assert torch.allclose(y[kept], x[kept] / (1 - p))  # inverted dropout: kept values scaled by 1 / (1 - p)
    # no structure from the 16-bit slicing: neighbours (same 64-bit word) are independent, and columns alike
    flat = kept.flatten().float()
    both = (flat[0::4] * flat[1::4]).mean().item()
    assert abs(both - (1 - p) ** 2) < 5 * (((1 - p) ** 2 * (1 - (1 - p) ** 2)) / (n / 4)) ** 0.5
    cols = kept.float().mean(0)
    assert (cols - (1 - p)).abs().max().item() < 6 * (p * (1 - p) / 2000) ** 0.5


def test_fast_dropout_backward_is_the_mask_and_eval_is_identity():
    from pipeline.ctr.layers import FastDropout
    torch.manual_seed(1)
    layer = FastDropout(0.3)
    x = torch.randn(64, 33, requires_grad=True)
    y = layer(x)
    y.backward(torch.ones_like(y))
    assert torch.equal(x.grad, (y != 0).float() / 0.7)
    layer.eval()
    assert layer(x) is x
    assert FastDropout(0.0).train()(x) is x
    with pytest.raises(ValueError, match=r"\[0, 1\)"):
        FastDropout(1.0)


def test_fast_dropout_is_seeded_and_differs_from_torch_dropout_stream():
    from pipeline.ctr.layers import FastDropout
    x = torch.ones(128, 400)
    torch.manual_seed(7)
    a = FastDropout(0.1).train()(x)
    torch.manual_seed(7)
    b = FastDropout(0.1).train()(x)
    torch.manual_seed(7)
    t = nn.Dropout(0.1).train()(x)
    assert torch.equal(a, b)
    assert not torch.equal(a != 0, t != 0)


def test_dropout_impl_selects_the_layer_and_is_checked():
    from pipeline.ctr.layers import FastDropout
    m = build_model("deepfm", VOCAB, embedding_dim=D, hidden_units=H, dropout=0.1, dropout_impl="fast")
    assert any(isinstance(x, FastDropout) for x in m.modules())
    assert not any(isinstance(x, nn.Dropout) for x in m.modules())
    m = build_model("deepfm", VOCAB, embedding_dim=D, hidden_units=H, dropout=0.1)
    assert any(isinstance(x, nn.Dropout) for x in m.modules())       # the constructors' default: FuxiCTR's
    with pytest.raises(ValueError, match="dropout_impl"):
        build_model("dnn", VOCAB, dropout=0.1, dropout_impl="cuda")
    with pytest.raises(ConfigError, match="ctr.dropout_impl"):
        parse({**ctr_section(), "dropout_impl": "philox"})


def test_gen_fm_term_equals_the_explicit_ordered_pair_sum():
    from pipeline.ctr.layers import gen_fm_second_order
    torch.manual_seed(3)
    g, e = torch.randn(5, 7, 4, dtype=torch.float64), torch.randn(5, 7, 4, dtype=torch.float64)
    want = sum((g[:, i] * e[:, j]).sum(-1) for i in range(7) for j in range(i + 1, 7))
    assert torch.allclose(gen_fm_second_order(g, e), want)
