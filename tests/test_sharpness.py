"""pipeline.ctr.sharpness: the top-Hessian-eigenvalue estimator against known and exact Hessians, the two
reported quantities, the frequency-binned sampling, the log-log fit and the figure."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from torch import nn
from torch.func import functional_call, hessian

from pipeline.core.data import TensorData
from pipeline.ctr.layers import FeatureEmbedding
from pipeline.ctr.models import build_model
from pipeline.ctr.sharpness import loglog_fit, sharpness_by_frequency, sharpness_figure, top_eigenvalue

D = 6


class LinearLogit(nn.Module):
    """logit = w . e_0 + c, c = sum of field 1's embedding + b: the Hessian of the mean BCE w.r.t. a field-0
    row is mean(p(1-p)) w w^T, so lambda_max = mean(p(1-p)) |w|^2."""

    def __init__(self, dim=D):
        super().__init__()
        self.embedding = FeatureEmbedding([5, 9], dim)
        self.w = nn.Parameter(torch.randn(dim))
        self.b = nn.Parameter(torch.tensor(0.3))

    def forward(self, x):
        e = self.embedding(x)
        return e[:, 0] @ self.w + e[:, 1].sum(-1) + self.b


class QuadLogit(nn.Module):
    """logit = 0.5 sum_d a_d e_0d^2 + c: at e_0 = 0 the gradient vanishes and, with y = 0, the Hessian is
    mean(p) diag(a) -- indefinite or negative definite at will."""

    def __init__(self, a):
        super().__init__()
        self.embedding = FeatureEmbedding([5, 9], len(a))
        self.a = nn.Parameter(torch.tensor(a, dtype=torch.float32))
        self.b = nn.Parameter(torch.tensor(-0.2))

    def forward(self, x):
        e = self.embedding(x)
        return 0.5 * (self.a * e[:, 0] ** 2).sum(-1) + e[:, 1].sum(-1) + self.b


def _rows(n, vocab, seed):
    g = torch.Generator().manual_seed(seed)
    return torch.stack([torch.randint(1, v, (n,), generator=g) for v in vocab], dim=1)


def _spread(model, std=0.5, seed=0):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for t in model.embedding.tables:
            t.weight[1:] = torch.randn(t.weight[1:].shape, generator=g, dtype=t.weight.dtype) * std
    return model


def _exact_hessian(model, x, y, field, value):
    """torch.func.hessian of the mean BCE over all of (x, y) w.r.t. row `value` of table `field`."""
    name = f"embedding.tables.{field}.weight"
    W = dict(model.named_parameters())[name].detach()
    was = model.training
    model.eval()

    def loss(e):
        W2 = W.clone()
        W2[value] = e
        s = functional_call(model, {name: W2}, (x,))
        return nn.functional.binary_cross_entropy_with_logits(s, y.to(s.dtype))

    try:
        return hessian(loss)(W[value].clone())
    finally:
        model.train(was)


# ------------------------------------------------------------------------------------------------ (a) known


def test_linear_logit_known_hessian():
    torch.manual_seed(0)
    m = _spread(LinearLogit())
    x = _rows(200, [5, 9], 1)
    y = (torch.rand(200) < 0.3).float()
    v = 3
    keep = x[:, 0] == v
    with torch.no_grad():
        p = torch.sigmoid(m(x[keep]).double())
        want = float((p * (1 - p)).mean() * m.w.double().pow(2).sum())
    got = top_eigenvalue(m, x, y, 0, v, iters=50, tol=1e-8, seed=0)   # rows without v are dropped
    assert got == pytest.approx(want, rel=1e-4)
    assert top_eigenvalue(m, x[keep], y[keep], 0, v, iters=50, tol=1e-8, seed=0) == pytest.approx(want, rel=1e-4)


@pytest.mark.parametrize("a, top", [
    ([1.0, -3.0, 0.5, -0.2], 1.0),      # a negative eigenvalue dominates in magnitude: lambda_max is still +1
    ([2.0, -2.0, 0.1], 2.0),            # +-2 tie in magnitude: plain power iteration alone cannot settle it
    ([-1.0, -3.0, -0.5], -0.5),         # negative definite: the algebraically largest is negative
    ([0.5, 4.0, 1.0], 4.0),             # positive definite
])
def test_indefinite_hessian_gives_algebraic_top(a, top):
    m = QuadLogit(a)
    _spread(m, seed=2)
    v = 2
    with torch.no_grad():
        m.embedding.tables[0].weight[v] = 0.0          # gradient 0 -> Hessian = mean(p - y) diag(a)
    x = _rows(120, [5, 9], 3)
    x[:40, 0] = v
    y = torch.zeros(120)
    with torch.no_grad():
        mean_p = float(torch.sigmoid(m(x[x[:, 0] == v]).double()).mean())
    got = top_eigenvalue(m, x, y, 0, v, iters=400, tol=1e-10, seed=5)
    assert got == pytest.approx(top * mean_p, rel=1e-4)


def test_model_state_restored_and_errors():
    m = build_model("dnn", [5, 6, 7], embedding_dim=4, hidden_units=[8], dropout=0.2)
    m.train()
    x, y = _rows(30, [5, 6, 7], 0), torch.ones(30)
    top_eigenvalue(m, x, y, 1, int(x[0, 1]), iters=5, tol=1e-6, seed=0)
    assert m.training and all(p.requires_grad for p in m.parameters())
    x[x[:, 1] == 4, 1] = 1
    with pytest.raises(ValueError, match="no row contains"):
        top_eigenvalue(m, x, y, 1, 4, iters=5, tol=1e-6, seed=0)
    with pytest.raises(ValueError, match="out of range"):
        top_eigenvalue(m, x, y, 3, 1, iters=5, tol=1e-6, seed=0)


# ------------------------------------------------------------------------------------------------ (b) exact


@pytest.mark.parametrize("name, kw", [
    ("pnn", {}),
    ("deepfm", {}),
    ("deepfm", {"encoder": "gated"}),          # sigmoid gate: the second-order term is non-zero
    ("dcn", {"num_cross_layers": 2}),          # cross net: quadratic in the embedding, indefinite Hessian
])
def test_power_iteration_matches_eigvalsh(name, kw):
    vocab = [6, 5, 7, 4]
    torch.manual_seed(11)
    m = _spread(build_model(name, vocab, embedding_dim=4, hidden_units=[16, 16], **kw).double(), seed=4)
    x = _rows(80, vocab, 12)
    y = (torch.rand(80, generator=torch.Generator().manual_seed(13)) < 0.4).double()
    for field, value in ((1, 2), (2, 5)):
        keep = x[:, field] == value
        ev = torch.linalg.eigvalsh(_exact_hessian(m, x[keep], y[keep], field, value))
        got = top_eigenvalue(m, x, y, field, value, iters=3000, tol=1e-14, seed=0)
        assert got == pytest.approx(float(ev[-1]), rel=1e-6, abs=1e-10 * float(ev.abs().max()))


# ------------------------------------------------------------------------------------------------ (c)-(e) report


VOCAB = [4, 12, 40, 90]
N = 600


def _data(seed=0):
    rng = np.random.default_rng(seed)
    cols = []
    for v in VOCAB:                                   # Zipf-like: a wide range of frequencies
        p = 1.0 / np.arange(1, v) ** 1.2
        cols.append(rng.choice(np.arange(1, v), size=N, p=p / p.sum()))
    x = np.stack(cols, axis=1).astype(np.int32)
    x[rng.random(x.shape) < 0.05] = 0                 # some padding / OOV ids
    y = (rng.random(N) < 0.3).astype(np.float32)
    return TensorData(torch.from_numpy(x), torch.from_numpy(y), None)


def _models():
    out = {}
    for i, name in enumerate(("adam", "helen")):
        torch.manual_seed(100 + i)
        out[name] = _spread(build_model("deepfm", VOCAB, embedding_dim=4, hidden_units=[16]).double(), 0.3, i)
    return out


SETTINGS = dict(bins=6, values_per_bin=4, max_rows_per_value=50, iters=200, seed=3, tol=1e-10, chunk_rows=60)


@pytest.fixture(scope="module")
def report():
    return sharpness_by_frequency(_models(), _data(), **SETTINGS)


def test_report_sampling(report):
    data = _data()
    x = data.x.numpy()
    json.dumps(report, allow_nan=False)                # JSON-able, no NaN
    keys = [[(p["field"], p["value"], p["frequency"], p["rows"]) for p in m["points"]]
            for m in report["models"].values()]
    assert keys[0] == keys[1] and keys[0]             # the same sample for every model
    edges = report["bins"]["edges"]
    assert len(edges) == SETTINGS["bins"] + 1 and all(a < b for a, b in zip(edges, edges[1:]))
    assert report["bins"]["sampled"] == [min(a, SETTINGS["values_per_bin"]) for a in report["bins"]["available"]]
    assert sum(report["bins"]["available"]) == sum(len(set(x[:, f]) - {0}) for f in range(x.shape[1]))
    for f, v, freq, rows in keys[0]:
        assert v != 0 and freq == int((x[:, f] == v).sum())
        assert rows == min(freq, SETTINGS["max_rows_per_value"])
    assert any(freq > SETTINGS["max_rows_per_value"] for _, _, freq, _ in keys[0])    # the cap is exercised
    for m in report["models"].values():
        med = [b for b in m["bin_medians"] if b["n"]]
        assert [b["n"] for b in m["bin_medians"]] == report["bins"]["sampled"]
        fm = [b["frequency"] for b in med]
        assert all(a < b for a, b in zip(fm, fm[1:]))     # bins monotone in frequency
        for b in med:
            assert edges[b["bin"]] <= b["frequency"] <= edges[b["bin"] + 1]
        assert set(m["fit"]) == {"lam_per_row", "lam_total"}
        assert m["fit"]["lam_total"]["n"] == len(m["points"]) - m["nonpositive"]
        assert m["unconverged"] == 0


def test_lam_total_is_the_block_of_the_whole_sample_hessian(report):
    data, models = _data(), _models()
    m = models["adam"]
    pts = report["models"]["adam"]["points"]
    for p in pts:
        assert p["lam_total"] == pytest.approx(p["lam_per_row"] * p["frequency"] / N, rel=1e-12)
    # independent check on values measured on all their rows: eigvalsh of the full-loss Hessian block
    checked = [p for p in pts if p["rows"] == p["frequency"]][::3][:4]
    assert checked
    for p in checked:
        H = _exact_hessian(m, data.x, data.y.double(), p["field"], p["value"])
        assert p["lam_total"] == pytest.approx(float(torch.linalg.eigvalsh(H)[-1]), rel=1e-6)


def test_batched_equals_single_value_estimate(report):
    data, models = _data(), _models()
    m = models["helen"]
    pts = report["models"]["helen"]["points"]
    for p in [q for q in pts if q["rows"] == q["frequency"]][:3]:
        single = top_eigenvalue(m, data.x, data.y, p["field"], p["value"], iters=SETTINGS["iters"],
                                tol=SETTINGS["tol"], seed=SETTINGS["seed"])
        assert p["lam_per_row"] == pytest.approx(single, rel=1e-9)


def test_deterministic(report):
    again = sharpness_by_frequency(_models(), _data(), **{**SETTINGS, "chunk_rows": 10_000})
    assert json.dumps(again) == json.dumps(report) or _close(again, report)
    assert sharpness_by_frequency(_models(), _data(), **SETTINGS) == report


def _close(a, b):
    """Same sample and lambdas to float rounding (a different chunking batches different values together)."""
    for k in a["models"]:
        pa, pb = a["models"][k]["points"], b["models"][k]["points"]
        assert [(p["field"], p["value"]) for p in pa] == [(p["field"], p["value"]) for p in pb]
        for p, q in zip(pa, pb):
            assert p["lam_per_row"] == pytest.approx(q["lam_per_row"], rel=1e-9)
    return True


def test_loglog_fit_recovers_planted_slope():
    rng = np.random.default_rng(0)
    f = np.geomspace(1, 1e5, 400)
    lam = 10 ** -3.0 * f ** 0.37 * np.exp(rng.normal(0, 0.05, f.size))
    fit = loglog_fit(f, lam)
    assert fit["slope"] == pytest.approx(0.37, abs=0.01)
    assert fit["intercept"] == pytest.approx(-3.0, abs=0.03)
    assert fit["r"] > 0.99 and fit["n"] == 400
    exact = loglog_fit([1, 10, 100], [5, 0.5, 0.05])
    assert exact["slope"] == pytest.approx(-1.0) and exact["r"] == pytest.approx(-1.0)
    assert exact["intercept"] == pytest.approx(np.log10(5))
    dropped = loglog_fit([1, 10, 100, 1000], [1, 10, -3, 0])           # non-positive lambdas are left out
    assert dropped["n"] == 2 and dropped["slope"] == pytest.approx(1.0)
    assert loglog_fit([5], [1])["slope"] is None and loglog_fit([], [])["n"] == 0


def test_figure_is_png(report):
    png = sharpness_figure(json.loads(json.dumps(report)))
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 10_000
    assert sharpness_figure({"models": {}})[:8] == b"\x89PNG\r\n\x1a\n"
