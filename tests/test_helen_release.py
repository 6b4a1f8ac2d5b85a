"""Helen's two variants (``optim.helen_variant``) against an independent transcription of the released update
(NUS-HPC-AI-Lab/Helen: ``optim/Helen.py`` first_step / second_step / count_feature_occurrence, the parameter
split of ``models/base_model.py`` embed_params / net_params, the batch step of ``train.py``
train_one_batch_Helen).

The transcription below is plain tensor code written from the release's algorithm, step by step; it shares
nothing with :mod:`pipeline.ctr.optim` (its own parameter split, counts, perturbation, restore and Adam). The
step rule under test is built the way the pipeline builds it, by ``step_rule_for(model, OptimParams)``.
"""

from __future__ import annotations

import copy
import dataclasses
import math
from pathlib import Path

import pytest
import torch
import yaml
from torch import nn

from pipeline.core.errors import ConfigError
from pipeline.core.params import from_mapping
from pipeline.ctr import optim as ctr_optim
from pipeline.ctr.baseline import step_rule_for
from pipeline.ctr.models import MODELS, build_model
from pipeline.ctr.optim import build_step_rule
from pipeline.ctr.params import OptimParams

PARAMS_YAML = Path(__file__).resolve().parents[1] / "params.yaml"

VOCAB = [7, 5, 9, 4]
SMALL = dict(embedding_dim=4, hidden_units=[16, 16])
LR_EMBED, LR_NET = 0.02, 0.005        # different, so a table trained with the wrong group's lr shows
RHO, BOUND = 0.3, 0.3
STEPS, BATCH = 5, 24

MODEL_CASES = {
    "dnn": ("dnn", {}),
    "widedeep": ("widedeep", {}),
    "pnn": ("pnn", {}),
    "deepfm-gen": ("deepfm", dict(encoder="gen")),       # params.yaml's ctr.deepfm.encoder
    "deepfm-none": ("deepfm", dict(encoder="none")),     # the constructor's default (FuxiCTR's DeepFM)
    "deepfm-gated": ("deepfm", dict(encoder="gated")),
    "dcn": ("dcn", dict(num_cross_layers=2)),
    "dlrm": ("dlrm", dict(interaction_op="dot")),
    "dcnv2": ("dcnv2", dict(num_cross_layers=2)),
}
WITH_LR_TABLES = ("widedeep", "deepfm-gen", "deepfm-none", "deepfm-gated")
WITHOUT_LR_TABLES = ("dnn", "pnn", "dcn", "dlrm", "dcnv2")


# --------------------------------------------------------------------------------------------------
# the release, transcribed


class ReleaseHelen:
    """The released Helen, written out. ``dense_norm="last_table"`` is the release (the dense perturbation
    divides by the variable ``grad_norm`` after the embedding loop overwrote it with each table's norm);
    ``"global"`` swaps in the global norm and nothing else (used to show what else differs)."""

    def __init__(self, model: nn.Module, *, lr_embed, lr_net, rho, bound, net_pert, dense_norm="last_table",
                 betas=(0.9, 0.999), eps=1e-8):
        # base_model.py: embed_params = `embedding_layer` params whose last dim > 1, in named_parameters
        # order; net_params = everything else (so the 1-dim LR tables are dense). Our `embedding_layer`
        # is FeatureEmbedding: modules `embedding` and `first_order`, parameter `<module>.tables.<field>.weight`.
        self.embed, self.fields, self.net = [], [], []
        for name, p in model.named_parameters():
            parts = name.split(".")
            is_table = len(parts) == 4 and parts[0] in ("embedding", "first_order") and parts[1] == "tables"
            if is_table and p.shape[-1] > 1:
                self.embed.append(p)
                self.fields.append(int(parts[2]))
            else:
                self.net.append(p)
        self.groups = [dict(params=self.embed, lr=lr_embed, embed=True),
                       dict(params=self.net, lr=lr_net, embed=False)]
        self.rho, self.bound, self.net_pert, self.dense_norm = rho, bound, net_pert, dense_norm
        self.betas, self.eps = betas, eps
        self.state: dict[int, dict] = {}

    def _st(self, p):
        return self.state.setdefault(id(p), {})

    def count_feature_occurrence(self, x):
        x = x.long()
        for p, f in zip(self.embed, self.fields):
            ids, counts = torch.unique(x[:, f], return_counts=True, sorted=True)
            self._st(p)["unique_ids"], self._st(p)["unique_ids_count"] = ids, counts

    def zero_grad(self):
        # torch 1.10 (the release's Dockerfile): zero_grad() zeroes existing grads, it does not drop them
        for g in self.groups:
            for p in g["params"]:
                if p.grad is not None:
                    p.grad.detach_()
                    p.grad.zero_()

    def _grad_norm(self):
        return torch.norm(torch.stack([p.grad.norm(p=2) for g in self.groups for p in g["params"]
                                       if p.grad is not None]), p=2)

    @torch.no_grad()
    def first_step(self):
        grad_norm = self._grad_norm()
        global_norm = grad_norm
        for g in self.groups:
            for p in g["params"]:
                if p.grad is None:
                    continue
                st = self._st(p)
                if g["embed"]:
                    grad_norm = torch.norm(p.grad)                  # overwrites the global norm
                    scale = self.rho / (grad_norm + 1e-12)
                    st["old_p"] = p.data.clone()
                    freq = torch.scatter(torch.zeros(p.shape[0], device=p.device), 0, st["unique_ids"],
                                         st["unique_ids_count"].float())
                    freq = torch.clamp(freq / torch.max(freq), self.bound)
                    e_w = p.grad * scale.to(p)
                    e_w = e_w * freq.unsqueeze(1)
                    p.add_(e_w)
                elif self.net_pert:
                    norm = grad_norm if self.dense_norm == "last_table" else global_norm
                    scale = self.rho / (norm + 1e-12)
                    st["old_p"] = p.data.clone()
                    p.add_(p.grad * scale.to(p))
                else:
                    st["old_g"] = p.grad.clone()
        self.zero_grad()

    @torch.no_grad()
    def second_step(self):
        beta1, beta2 = self.betas
        for g in self.groups:
            for p in g["params"]:
                if p.grad is None:
                    continue
                st = self._st(p)
                if g["embed"] or self.net_pert:
                    p.data = st["old_p"]
                else:
                    p.grad = st["old_g"]
                grad = p.grad.data
                if "exp_avg" not in st:
                    st["step"], st["exp_avg"], st["exp_avg_sq"] = 0, torch.zeros_like(p), torch.zeros_like(p)
                st["step"] += 1
                bc1, bc2 = 1 - beta1 ** st["step"], 1 - beta2 ** st["step"]
                st["exp_avg"].mul_(beta1).add_(grad, alpha=1 - beta1)
                st["exp_avg_sq"].mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
                denom = (st["exp_avg_sq"].sqrt() / math.sqrt(bc2)).add(self.eps)
                p.data.add_(st["exp_avg"] / denom, alpha=-g["lr"] / bc1)

    def train_one_batch(self, model, x, y):
        """train.py train_one_batch_Helen (the loss: BCE; our models return logits)."""
        self.count_feature_occurrence(x)
        loss = nn.functional.binary_cross_entropy_with_logits(model(x), y)
        self.zero_grad()
        loss.backward()
        self.first_step()
        loss = nn.functional.binary_cross_entropy_with_logits(model(x), y)
        loss.backward()
        self.second_step()


# --------------------------------------------------------------------------------------------------
# helpers


def optim_params(variant: str, net_pert: bool, **changes) -> OptimParams:
    p = OptimParams(name="helen", rho=RHO, bound=BOUND, net_pert=net_pert, helen_variant=variant,
                    lr_embed=LR_EMBED, lr_net=LR_NET, clip_norm=10.0)
    p = dataclasses.replace(p, **changes)
    p.validate()
    return p


def make_model(case: str, seed: int = 0):
    name, kw = MODEL_CASES[case]
    torch.manual_seed(seed)
    m = build_model(name, VOCAB, **SMALL, **kw).double()
    with torch.no_grad():         # livelier tables than FuxiCTR's 1e-4 init, so every part of the step shows
        for tables in m.embedding_groups().values():
            for t in tables:
                t.weight[1:].normal_(0.0, 0.1)
    return m


def batches(n=STEPS, seed=1):
    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(n):
        x = torch.stack([torch.randint(0, v, (BATCH,), generator=g) for v in VOCAB], 1)   # 0 = PAD included
        y = (torch.rand(BATCH, generator=g, dtype=torch.float64) < 0.4).double()
        out.append((x, y))
    return out


def run_rule(model, params: OptimParams, data):
    rule = step_rule_for(model, params)
    for x, y in data:
        def closure(x=x, y=y):
            loss = nn.functional.binary_cross_entropy_with_logits(model(x), y)
            loss.backward()
            return loss.detach()
        rule.step(x, closure)
    return model


def run_release(model, data, *, net_pert, dense_norm="last_table"):
    ref = ReleaseHelen(model, lr_embed=LR_EMBED, lr_net=LR_NET, rho=RHO, bound=BOUND, net_pert=net_pert,
                       dense_norm=dense_norm)
    for x, y in data:
        ref.train_one_batch(model, x, y)
    return model


def max_diff(a: nn.Module, b: nn.Module) -> float:
    return max((pa - pb).abs().max().item() for pa, pb in zip(a.parameters(), b.parameters()))


def assert_same_weights(a: nn.Module, b: nn.Module, tol=1e-6):
    for (name, pa), (_, pb) in zip(a.named_parameters(), b.named_parameters()):
        torch.testing.assert_close(pa, pb, atol=tol, rtol=0.0, msg=lambda m, n=name: f"{n}: {m}")


# --------------------------------------------------------------------------------------------------
# tests


@pytest.mark.parametrize("net_pert", [True, False], ids=["net_pert", "no_net_pert"])
@pytest.mark.parametrize("case", list(MODEL_CASES))
def test_release_variant_matches_the_transcribed_release(case, net_pert):
    m0 = make_model(case)
    data = batches()
    ours = run_rule(copy.deepcopy(m0), optim_params("release", net_pert), data)
    ref = run_release(copy.deepcopy(m0), data, net_pert=net_pert)
    assert max_diff(m0, ref) > 1e-3                                   # it trained
    assert_same_weights(ours, ref)


@pytest.mark.parametrize("net_pert", [True, False], ids=["net_pert", "no_net_pert"])
@pytest.mark.parametrize("case", WITH_LR_TABLES)
def test_recdag_differs_from_the_release_on_models_with_lr_tables(case, net_pert):
    m0 = make_model(case)
    data = batches()
    ours = run_rule(copy.deepcopy(m0), optim_params("recdag", net_pert), data)
    ref = run_release(copy.deepcopy(m0), data, net_pert=net_pert)
    rel = run_rule(copy.deepcopy(m0), optim_params("release", net_pert), data)
    assert max_diff(ours, ref) > 1e-3 and max_diff(ours, rel) > 1e-3
    lr_tables = [t.weight for t in ours.first_order.tables]
    ref_tables = [t.weight for t in ref.first_order.tables]
    assert max((a - b).abs().max().item() for a, b in zip(lr_tables, ref_tables)) > 1e-3


def test_release_variant_puts_lr_tables_in_the_dense_group():
    m = make_model("deepfm-gen")
    first = {id(t.weight) for t in m.first_order.tables}
    emb = {id(t.weight) for t in m.embedding.tables}
    for variant, lr_group in (("release", "net"), ("recdag", "embedding")):
        rule = step_rule_for(m, optim_params(variant, True))
        groups = {g["name"]: {id(p) for p in g["params"]} for g in rule.optimizer.param_groups}
        lrs = {g["name"]: g["lr"] for g in rule.optimizer.param_groups}
        assert first <= groups[lr_group] and emb <= groups["embedding"], variant
        assert lrs == {"embedding": LR_EMBED, "net": LR_NET}
        helen_tables = {id(t.weight) for _, t in rule.field_tables}
        assert helen_tables == (emb if variant == "release" else emb | first)
        total = sum(len(g) for g in groups.values())
        assert total == len(list(m.parameters()))                       # every parameter exactly once


@pytest.mark.parametrize("case", WITHOUT_LR_TABLES)
def test_without_lr_tables_the_variants_differ_only_through_the_dense_norm(case):
    m0 = make_model(case)
    data = batches()
    # net_pert off: no dense perturbation, so nothing left to differ
    rel = run_rule(copy.deepcopy(m0), optim_params("release", False), data)
    rec = run_rule(copy.deepcopy(m0), optim_params("recdag", False), data)
    assert_same_weights(rel, rec, tol=0.0)
    # net_pert on: they differ, and recdag is the transcribed release with the global norm swapped in
    rel = run_rule(copy.deepcopy(m0), optim_params("release", True), data)
    rec = run_rule(copy.deepcopy(m0), optim_params("recdag", True), data)
    assert max_diff(rel, rec) > 1e-4
    ref_global = run_release(copy.deepcopy(m0), data, net_pert=True, dense_norm="global")
    assert_same_weights(rec, ref_global)


@pytest.mark.parametrize("case", WITH_LR_TABLES[:2])
def test_recdag_is_the_release_with_lr_tables_as_embeddings_and_the_global_norm(case):
    """Pin recdag too: the transcription with the LR tables moved into the embedding group (after the
    main tables, so the last table is the last field's LR table) and the global dense norm."""
    m0 = make_model(case)
    data = batches()
    for net_pert in (True, False):
        rec = run_rule(copy.deepcopy(m0), optim_params("recdag", net_pert), data)
        ref_model = copy.deepcopy(m0)
        ref = ReleaseHelen(ref_model, lr_embed=LR_EMBED, lr_net=LR_NET, rho=RHO, bound=BOUND,
                           net_pert=net_pert, dense_norm="global")
        lr = [t.weight for t in ref_model.first_order.tables]
        ref.embed += lr
        ref.fields += list(range(len(lr)))
        ref.net[:] = [p for p in ref.net if all(p is not w for w in lr)]
        for x, y in data:
            ref.train_one_batch(ref_model, x, y)
        assert_same_weights(rec, ref_model)


def test_helen_variant_param_is_validated():
    data = yaml.safe_load(PARAMS_YAML.read_text())["optim"]
    assert "net_norm" not in data and data["helen_variant"] in OptimParams.HELEN_VARIANTS
    assert set(OptimParams.HELEN_VARIANTS) == {"release", "recdag"} == set(ctr_optim.HELEN_VARIANTS)
    for v in ("release", "recdag"):
        assert from_mapping(OptimParams, {**data, "helen_variant": v}, "optim").helen_variant == v
    with pytest.raises(ConfigError, match=r"optim\.helen_variant"):
        from_mapping(OptimParams, {**data, "helen_variant": "last_table"}, "optim")
    with pytest.raises(ConfigError, match=r"optim\.helen_variant"):            # built directly, then checked
        dataclasses.replace(from_mapping(OptimParams, data, "optim"), helen_variant="global").validate()
    with pytest.raises(ConfigError, match=r"optim\.net_norm"):                  # the old key is gone
        from_mapping(OptimParams, {**data, "net_norm": "global"}, "optim")
    m = make_model("dnn")
    with pytest.raises(ValueError, match="helen_variant"):
        build_step_rule("helen", field_tables=list(enumerate(m.embedding.tables)), embed_params=[],
                        net_params=m.net_parameters(), lr_embed=1e-3, lr_net=1e-3, rho=0.05, bound=0.3,
                        net_pert=True, helen_variant="paper", clip_norm=0.0)


def test_every_model_is_covered():
    seven = {"dnn", "widedeep", "pnn", "deepfm", "dcn", "dlrm", "dcnv2"}
    assert {name for name, _ in MODEL_CASES.values()} == seven <= set(MODELS)
