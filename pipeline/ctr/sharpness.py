"""Helen's premise measured: the top Hessian eigenvalue of a feature value's embedding against its training
frequency.

Zhu, Liu, Zheng, Guo and You, "Helen: Optimizing CTR Prediction Models with Frequency-wise Hessian Eigenvalue
Regularization", WWW 2024 (arXiv 2403.00798; release github.com/NUS-HPC-AI-Lab/Helen). Its Figure 1 (PNN on
Avazu / Criteo / Taobao) reports "a strong positive correlation between the top hessian eigenvalue and feature
frequency", read as "frequently occurring features tend to converge towards sharp local minima" -- which is
why Helen's per-feature perturbation radius is ``rho * clamp(count / max_count, min=bound)``. The release has no
code for the measurement; this module is ours.

The exact definition
--------------------

A trained model ``m`` in **eval mode** (dropout off, batch norm on its running statistics), all its weights fixed
except one row: ``e = E_f[v]``, the main ``m.embedding.tables[f]`` row of value ``v`` of field ``f`` (the 1-dim
``first_order`` tables of WideDeep/DeepFM are not measured; they are weights held fixed). With ``s_i(e)`` the
logit of training row ``i``, ``y_i`` its label and ``l_i(e) = BCEWithLogits(s_i(e), y_i)``:

* ``R_v`` = the training rows with ``x[i, f] == v`` (``n_v = |R_v|`` is the value's **training frequency**); only
  these depend on ``e``. ``S_v`` = ``R_v``, or a seeded subsample of ``max_rows_per_value`` of them.
* ``H_v = d^2/de^2 (1/|S_v|) sum_{i in S_v} l_i(e)``, the ``D x D`` Hessian of the **mean** loss over the rows
  containing ``v``, at the trained ``e``:
  ``H_v = mean_i [ p_i (1 - p_i) g_i g_i^T + (p_i - y_i) d^2 s_i / de^2 ]``, ``p_i = sigmoid(s_i)``,
  ``g_i = ds_i/de``.
* ``lam_per_row(v) = lambda_max(H_v)``, the **algebraically largest** eigenvalue of ``H_v`` (the steepest
  upward curvature of the loss around ``e``: the paper's "top eigenvalue", i.e. sharpness). Power iteration on its
  own converges to the largest-*magnitude* eigenvalue; when ``H_v`` is indefinite with a dominant negative
  eigenvalue (possible for DCN/DCNv2 cross nets or the gated/GEN DeepFM, whose logits are not piecewise linear in
  ``e``) a second, shifted power iteration on ``H_v + rho I`` (``rho`` = the spectral radius found by the first)
  finds ``lambda_max``; the estimate is the larger of the two signed Rayleigh quotients (each a lower bound of
  ``lambda_max``). For ReLU models whose logit is piecewise linear in ``e`` (DNN, WideDeep, PNN, DeepFM without
  encoder, DLRM) the second term vanishes, ``H_v`` is the PSD Gauss-Newton matrix and ``lambda_max`` is also the
  spectral radius. ``lambda_max`` can be <= 0 (a flat or concave row); such points are kept in the report and
  left out of the log-log fits and the figure.
* ``lam_total(v) = lambda_max`` of the ``e``-block of the Hessian of the **whole training-sample loss**
  ``(1/N) sum_{i=1..N} l_i`` (``N`` = all sampled training rows). Rows without ``v`` do not depend on ``e``, so that
  block is ``(n_v / N) H_v`` and ``lam_total = lam_per_row * n_v / N`` (with ``n_v`` the full count even when
  ``S_v`` is a subsample; then ``lam_per_row`` is estimated on ``S_v``).

Why both: ``lam_total`` is the curvature the optimizer actually sees for that row (what SAM/Helen perturb against),
but it grows like ``n_v`` **by construction** (count scaling): a slope of about 1 on log-log axes says nothing
about the minimum's shape. ``lam_per_row`` divides the count out and isolates the curvature per occurrence; a
positive slope there is the non-trivial part of the paper's claim.

How it is computed
------------------

Hessian-vector products by autograd double backward, batched: the rows of many values of the same field are
evaluated in one pass, each row's field-``f`` embedding a separate leaf ``z_i`` (a forward hook on
``m.embedding`` substitutes it). Rows are independent in eval mode, so one backward gives every row's ``g_i``,
the Gauss-Newton part of every ``H_v`` is assembled explicitly (``sum_i p_i(1-p_i) g_i g_i^T / |S_v|``, ``K x D x D``)
and the second-order part ``sum_i (p_i - y_i) (d^2 s_i/dz_i^2) u_v / |S_v|`` is one double backward for all ``K``
values at once. One seeded probe per chunk tests whether that part vanishes row by row (it does, exactly, for the
piecewise-linear models above); if it does it is skipped, which makes the ReLU zoo ~10x cheaper. Power
iteration then runs block-wise on the ``K`` independent ``D x D`` operators, each block from its own seeded
start vector (``seed``, field, value), each frozen once its Rayleigh quotient changes by less than ``tol``
(relative) between iterations, or after ``iters`` iterations.

Sampling (:func:`sharpness_by_frequency`): frequencies are counted on the training rows given; the (field,
value) pairs of **all** categorical fields are pooled (one "field group") into ``bins`` log-spaced frequency
bins between the smallest and largest count; the padding / out-of-vocabulary id 0 is skipped; up to
``values_per_bin`` pairs are drawn per bin with a seeded generator, and the same pairs (and the same row
subsamples and start vectors) are measured for every model.
"""

from __future__ import annotations

import contextlib
import io
import logging
import math
import time
from typing import Callable, Mapping, Sequence

import numpy as np
import torch
from torch import nn

from pipeline.core.seeding import derive_seed

__all__ = ["DEFINITION", "top_eigenvalue", "sharpness_by_frequency", "loglog_fit", "sharpness_figure"]

log = logging.getLogger(__name__)

PAPER = ("Zhu et al., Helen: Optimizing CTR Prediction Models with Frequency-wise Hessian Eigenvalue "
         "Regularization, WWW 2024 (arXiv 2403.00798), Figure 1")

DEFINITION = (
    "Model in eval mode, all weights fixed except the main embedding row e = E_f[v] of value v of field f. "
    "lam_per_row = the algebraically largest eigenvalue of the DxD Hessian w.r.t. e of the MEAN BCE-with-logits "
    "loss over the training rows containing v (a seeded subsample of max_rows_per_value rows when there are "
    "more); lam_total = the largest eigenvalue of the e-block of the Hessian of the mean loss over ALL N training "
    "rows = lam_per_row * n_v / N (only rows containing v depend on e). lam_total grows with n_v by construction; "
    "lam_per_row is the curvature per occurrence. Frequency n_v = occurrences of (f, v) in the training rows. "
    "Estimated by autograd Hessian-vector products and seeded power iteration (plus a shifted second pass "
    "when a negative eigenvalue dominates in magnitude).")

# Phase 1's signed Rayleigh quotient r and spectral-radius estimate rho = |Hv|: r < (1 - MIXED) * rho means the
# dominant direction is not (only) the top of the spectrum, so the shifted second pass runs.
MIXED = 1e-3
DEFAULT_CHUNK_ROWS = 16384


# ------------------------------------------------------------------------------------------------- estimator


@contextlib.contextmanager
def _measuring(model: nn.Module):
    """Eval mode and no parameter gradients for the duration; the model's own flags are restored after."""
    was_training = model.training
    flags = [(p, p.requires_grad) for p in model.parameters()]
    model.eval()
    for p, _ in flags:
        p.requires_grad_(False)
    try:
        yield model
    finally:
        for p, req in flags:
            p.requires_grad_(req)
        model.train(was_training)


def _check_model(model: nn.Module, field: int) -> nn.Embedding:
    tables = getattr(getattr(model, "embedding", None), "tables", None)
    if tables is None:
        raise TypeError("model has no .embedding.tables (a pipeline.ctr.models.CTRModel or alike is expected)")
    if not 0 <= int(field) < len(tables):
        raise ValueError(f"field {field} is out of range: the model has {len(tables)} fields")
    return tables[int(field)]


def _logits_with_field(model: nn.Module, x: torch.Tensor, field: int, z: torch.Tensor) -> torch.Tensor:
    """``model(x)`` with the field-``field`` embedding of row ``i`` replaced by ``z[i]`` (forward hook on
    ``model.embedding``, whose output is ``[B, F, D]``)."""

    def hook(module, inputs, out):
        return torch.cat([out[:, :field], z.to(out.dtype).unsqueeze(1), out[:, field + 1:]], dim=1)

    handle = model.embedding.register_forward_hook(hook)
    try:
        s = model(x)
    finally:
        handle.remove()
    if s.shape != (x.shape[0],):
        raise ValueError(f"model must return logits [B]; got {tuple(s.shape)} for B={x.shape[0]}")
    return s


def _power(hvp: Callable[[torch.Tensor], torch.Tensor], v0: torch.Tensor, shift: torch.Tensor,
           active: torch.Tensor, iters: int, tol: float):
    """Block-wise power iteration on ``H_k + shift_k I`` for the active blocks (``v0`` ``[K, D]`` float64).
    Returns the signed Rayleigh quotient of ``H_k`` (not shifted) and ``|H_k v|`` at each block's last vector,
    and whether the quotient converged (relative change <= tol, or H_k v = 0)."""
    K = v0.shape[0]
    v = v0 / v0.norm(dim=1, keepdim=True)
    r = torch.zeros(K, dtype=torch.float64)
    rho = torch.zeros(K, dtype=torch.float64)
    prev = torch.full((K,), math.nan, dtype=torch.float64)
    conv = torch.zeros(K, dtype=torch.bool)
    active = active.clone()
    for _ in range(max(int(iters), 1)):
        if not bool(active.any()):
            break
        hv = hvp(v)
        rq = (v * hv).sum(dim=1)
        nh = hv.norm(dim=1)
        r = torch.where(active, rq, r)
        rho = torch.where(active, nh, rho)
        done = active & (((rq - prev).abs() <= tol * rq.abs()) | (nh == 0))
        conv |= done
        active &= ~done
        prev = rq
        w = hv + shift[:, None] * v
        wn = w.norm(dim=1, keepdim=True)
        v = torch.where(active[:, None] & (wn > 0), w / wn.clamp_min(1e-300), v)
    return r, rho, conv


def _top_of_blocks(hvp, v0: torch.Tensor, iters: int, tol: float):
    """lambda_max of each block: phase 1 plain power iteration; phase 2 (only for blocks where a negative
    eigenvalue dominates or the dominant pair has mixed signs) on H + rho I. Returns (lam, converged, shifted)."""
    K = v0.shape[0]
    r1, rho1, c1 = _power(hvp, v0, torch.zeros(K, dtype=torch.float64), torch.ones(K, dtype=torch.bool),
                          iters, tol)
    mixed = (rho1 > 0) & (r1 < (1.0 - MIXED) * rho1)
    if not bool(mixed.any()):
        return r1, c1, mixed
    r2, _, c2 = _power(hvp, v0, torch.where(mixed, rho1, torch.zeros_like(rho1)), mixed, iters, tol)
    lam = torch.where(mixed, torch.maximum(r1, r2), r1)
    return lam, torch.where(mixed, c2, c1), mixed


def _start_vectors(seed: int, field: int, values: Sequence[int], dim: int) -> torch.Tensor:
    """The seeded power-iteration start vector of each (field, value): independent of batching."""
    return torch.from_numpy(np.stack([
        np.random.default_rng(derive_seed(seed, "sharpness-start", str(int(field)), str(int(v)))).standard_normal(dim)
        for v in values])).to(torch.float64)


def _block_top_eigenvalues(model: nn.Module, x: torch.Tensor, y: torch.Tensor, field: int, seg: torch.Tensor,
                           v0: torch.Tensor, *, iters: int, tol: float):
    """lambda_max of ``H_k`` for the K blocks of one field: rows ``x`` ``[M, F]`` (all with the block's value in
    ``field``), ``seg`` ``[M]`` the block of each row (0..K-1, every block non-empty), ``v0`` ``[K, D]`` start
    vectors. The model must be in eval mode with parameter gradients off (:func:`_measuring`)."""
    table = model.embedding.tables[field]
    K, D = v0.shape
    seg = seg.long()
    z = table.weight.detach()[x[:, field].long()].clone().requires_grad_(True)
    s = _logits_with_field(model, x, field, z)
    (g,) = torch.autograd.grad(s.sum(), z, create_graph=True)
    n = torch.bincount(seg, minlength=K).to(torch.float64)
    inv = (1.0 / n)[seg]
    p = torch.sigmoid(s.detach().to(torch.float64))
    a = p * (1.0 - p) * inv                                   # Gauss-Newton weight per row
    c = (p - y.to(torch.float64)) * inv                      # weight of d^2 s / dz^2 per row
    gd = g.detach().to(torch.float64)
    gn = torch.zeros(K, D, D, dtype=torch.float64)
    step = max(1, (1 << 22) // (D * D))                      # bound the [rows, D, D] temporary (~32 MB)
    for i in range(0, gd.shape[0], step):
        gi = gd[i:i + step]
        gn.index_add_(0, seg[i:i + step], a[i:i + step, None, None] * gi[:, :, None] * gi[:, None, :])

    second = False
    if g.requires_grad:
        probe = v0[seg].to(g.dtype)
        (r,) = torch.autograd.grad(g, z, grad_outputs=probe, retain_graph=True, allow_unused=True)
        second = r is not None and bool(r.ne(0).any())
    cw = c.to(g.dtype)[:, None]

    def hvp(u: torch.Tensor) -> torch.Tensor:
        hu = torch.bmm(gn, u.unsqueeze(-1)).squeeze(-1)
        if second:
            (rv,) = torch.autograd.grad(g, z, grad_outputs=cw * u[seg].to(g.dtype), retain_graph=True)
            hu = hu + torch.zeros(K, D, dtype=torch.float64).index_add_(0, seg, rv.to(torch.float64))
        return hu

    lam, conv, shifted = _top_of_blocks(hvp, v0, iters, tol)
    return lam, conv, shifted, second


def top_eigenvalue(model: nn.Module, x, y, field: int, value: int, *, iters: int = 100, tol: float = 1e-6,
                   seed: int = 0) -> float:
    """``lambda_max`` (algebraically largest eigenvalue) of the ``D x D`` Hessian of the mean BCE-with-logits
    loss over the rows of ``x`` (``[B, F]`` ids) / ``y`` (``[B]`` labels) that contain ``value`` in ``field``,
    w.r.t. that value's main embedding row, all other weights fixed, the model in eval mode (restored after).
    Rows without ``value`` do not depend on the row and are dropped (the mean is over the rows containing it;
    multiply by ``n_v / N`` for the block of a mean over ``N`` rows). Power iteration from the seeded start
    vector of (``seed``, field, value), at most ``iters`` steps per phase, stopping at relative change ``tol``
    (see the module docstring). ``ValueError`` if no row contains ``value``."""
    x = torch.as_tensor(x)
    y = torch.as_tensor(y)
    table = _check_model(model, field)
    if not 0 <= int(value) < table.num_embeddings:
        raise ValueError(f"value {value} is out of range for field {field} (vocabulary {table.num_embeddings})")
    keep = x[:, int(field)] == int(value)
    if not bool(keep.any()):
        raise ValueError(f"no row contains value {value} in field {field}")
    xs, ys = x[keep], y[keep]
    v0 = _start_vectors(seed, field, [int(value)], table.embedding_dim)
    with _measuring(model):
        lam, _, _, _ = _block_top_eigenvalues(model, xs, ys, int(field), torch.zeros(len(xs), dtype=torch.long),
                                              v0, iters=iters, tol=tol)
    return float(lam[0])


# ------------------------------------------------------------------------------------------------- sampling


def loglog_fit(frequency, lam) -> dict:
    """Least squares ``log10 lam = slope * log10 frequency + intercept`` over the points with both positive,
    and Pearson's ``r`` of the two logs. ``slope`` / ``intercept`` / ``r`` are ``None`` when fewer than 2 points
    (or no spread) remain; ``n`` is the number of points used."""
    f = np.asarray(frequency, dtype=np.float64)
    lm = np.asarray(lam, dtype=np.float64)
    ok = np.isfinite(f) & np.isfinite(lm) & (f > 0) & (lm > 0)
    lx, ly = np.log10(f[ok]), np.log10(lm[ok])
    out = {"slope": None, "intercept": None, "r": None, "n": int(ok.sum())}
    if len(lx) < 2 or np.ptp(lx) == 0:
        return out
    dx, dy = lx - lx.mean(), ly - ly.mean()
    slope = float((dx * dy).sum() / (dx * dx).sum())
    out["slope"] = slope
    out["intercept"] = float(ly.mean() - slope * lx.mean())
    sy = float(np.sqrt((dy * dy).sum()))
    out["r"] = float((dx * dy).sum() / (np.sqrt((dx * dx).sum()) * sy)) if sy > 0 else None
    return out


def _frequencies(x: np.ndarray):
    """All (field, value != 0, count >= 1) of the id matrix, field-major then value order."""
    fields, values, counts = [], [], []
    for f in range(x.shape[1]):
        col = x[:, f]
        if col.size and col.min() < 0:
            raise ValueError(f"field {f} has negative ids")
        cnt = np.bincount(col)
        vals = np.flatnonzero(cnt)
        vals = vals[vals != 0]                       # 0 = padding / out-of-vocabulary
        fields.append(np.full(len(vals), f, dtype=np.int64))
        values.append(vals.astype(np.int64))
        counts.append(cnt[vals].astype(np.int64))
    return np.concatenate(fields), np.concatenate(values), np.concatenate(counts)


def _median(a) -> float | None:
    a = np.asarray(a, dtype=np.float64)
    return float(np.median(a)) if a.size else None


def _clean(v: float) -> float | None:
    v = float(v)
    return v if math.isfinite(v) else None


def sharpness_by_frequency(models: Mapping[str, nn.Module], data, *, bins: int = 20, values_per_bin: int = 25,
                           max_rows_per_value: int = 2048, iters: int = 30, seed: int = 0, tol: float = 1e-4,
                           chunk_rows: int = DEFAULT_CHUNK_ROWS) -> dict:
    """``lam_per_row`` and ``lam_total`` (module docstring) of a seeded sample of feature values, by training
    frequency, for each model of ``models`` (e.g. ``{"adam": m1, "sam": m2, "helen": m3}``, same fields and
    vocabularies), on ``data`` (a :class:`~pipeline.core.data.TensorData`: the training rows; ``data.x``
    ``[N, F]`` ids, ``data.y`` ``[N]`` labels).

    Frequencies are counted on ``data``; the (field, value) pairs of all fields are pooled into ``bins``
    log-spaced bins from the smallest to the largest count (id 0 skipped); up to ``values_per_bin`` pairs per bin
    are drawn (seeded), each measured on at most ``max_rows_per_value`` of its rows (a seeded subsample), with
    power iteration of at most ``iters`` steps per phase (``tol``: relative change of the Rayleigh quotient).
    ``chunk_rows`` bounds the rows evaluated in one autograd pass (memory; results do not depend on it beyond
    float rounding). Returns a JSON-able dict: ``definition``, ``paper``, ``settings``, ``bins`` (edges and
    counts, shared by all models) and ``models``: per model ``points`` (field, value, frequency, rows,
    lam_per_row, lam_total, converged), ``bin_medians`` and ``fit`` (:func:`loglog_fit` of each quantity
    against frequency, over all points with lambda > 0), plus ``nonpositive`` / ``unconverged`` counts."""
    if not models:
        raise ValueError("models is empty")
    for k, name in (("bins", bins), ("values_per_bin", values_per_bin), ("max_rows_per_value", max_rows_per_value),
                    ("iters", iters), ("chunk_rows", chunk_rows)):
        if int(name) < 1:
            raise ValueError(f"{k} must be >= 1, got {name}")
    x = torch.as_tensor(data.x)
    y = torch.as_tensor(data.y)
    N, nf = x.shape
    if N == 0:
        raise ValueError("data has no rows")
    for key, m in models.items():
        tables = getattr(getattr(m, "embedding", None), "tables", None)
        if tables is None or len(tables) != nf:
            raise ValueError(f"model {key!r} does not have {nf} embedding tables (one per field of data)")
        too_big = [f for f in range(nf) if int(x[:, f].max()) >= tables[f].num_embeddings]
        if too_big:
            raise ValueError(f"model {key!r}: data ids exceed the vocabulary of field(s) {too_big}")
    xn = x.numpy()
    pf, pv, pc = _frequencies(xn)
    if len(pc) == 0:
        raise ValueError("data has no non-padding ids")
    lo, hi = float(pc.min()), float(pc.max())
    edges = np.logspace(math.log10(lo), math.log10(hi), int(bins) + 1)
    edges[0], edges[-1] = lo, hi
    which = np.clip(np.searchsorted(edges, pc, side="right") - 1, 0, int(bins) - 1)

    chosen = []
    available = np.bincount(which, minlength=int(bins))
    for b in range(int(bins)):
        idx = np.flatnonzero(which == b)
        if len(idx) > values_per_bin:
            g = np.random.default_rng(derive_seed(seed, "sharpness-values", str(b)))
            idx = np.sort(g.choice(idx, size=int(values_per_bin), replace=False))
        chosen.append(idx)
    sample = np.concatenate(chosen) if chosen else np.zeros(0, dtype=np.int64)
    sample = sample[np.lexsort((pv[sample], pf[sample]))]          # field-major, then value
    sampled = np.bincount(which[sample], minlength=int(bins))

    # rows of each sampled value (the same subsample for every model)
    rows_of: dict[int, np.ndarray] = {}
    for f in np.unique(pf[sample]):
        col = xn[:, f]
        order = np.argsort(col, kind="stable")
        sorted_col = col[order]
        for j in sample[pf[sample] == f]:
            v = pv[j]
            a, b = np.searchsorted(sorted_col, v, "left"), np.searchsorted(sorted_col, v, "right")
            r = order[a:b]
            if len(r) > max_rows_per_value:
                g = np.random.default_rng(derive_seed(seed, "sharpness-rows", str(int(f)), str(int(v))))
                r = np.sort(g.choice(r, size=int(max_rows_per_value), replace=False))
            rows_of[int(j)] = r

    # chunks: values of one field whose rows together stay within chunk_rows (a bigger value goes alone)
    chunks: list[tuple[int, list[int]]] = []
    for f in np.unique(pf[sample]):
        cur, cur_rows = [], 0
        for j in sample[pf[sample] == f]:
            k = len(rows_of[int(j)])
            if cur and cur_rows + k > chunk_rows:
                chunks.append((int(f), cur))
                cur, cur_rows = [], 0
            cur.append(int(j))
            cur_rows += k
        if cur:
            chunks.append((int(f), cur))

    report_models = {}
    for key, model in models.items():
        t0 = time.perf_counter()
        lam_row = np.zeros(len(pc), dtype=np.float64)
        conv = np.zeros(len(pc), dtype=bool)
        second_any = False
        dim = model.embedding.tables[0].embedding_dim
        with _measuring(model):
            for f, js in chunks:
                idx = np.concatenate([rows_of[j] for j in js])
                seg = torch.from_numpy(np.repeat(np.arange(len(js)), [len(rows_of[j]) for j in js]))
                it = torch.from_numpy(idx)
                v0 = _start_vectors(seed, f, [int(pv[j]) for j in js], dim)
                lam, c, _, second = _block_top_eigenvalues(model, x.index_select(0, it), y.index_select(0, it), f,
                                                           seg, v0, iters=iters, tol=tol)
                second_any |= second
                lam_row[js] = lam.numpy()
                conv[js] = c.numpy()
        points = []
        for j in sample:
            lr = float(lam_row[j])
            points.append({"field": int(pf[j]), "value": int(pv[j]), "frequency": int(pc[j]),
                           "rows": int(len(rows_of[int(j)])), "lam_per_row": _clean(lr),
                           "lam_total": _clean(lr * float(pc[j]) / N), "converged": bool(conv[j])})
        report_models[key] = _summarise(points, which[sample], int(bins))
        report_models[key]["second_order_term"] = bool(second_any)
        log.info("sharpness %s: %d values in %d chunks, %.1fs", key, len(sample), len(chunks),
                 time.perf_counter() - t0)

    return {
        "definition": DEFINITION,
        "paper": PAPER,
        "settings": {"rows": int(N), "fields": int(nf), "bins": int(bins), "values_per_bin": int(values_per_bin),
                     "max_rows_per_value": int(max_rows_per_value), "iters": int(iters), "tol": float(tol),
                     "seed": int(seed), "pooling": "all categorical fields pooled into one set of log-spaced "
                     "frequency bins (one field group); id 0 (padding / OOV) skipped",
                     "values_sampled": int(len(sample)), "values_available": int(len(pc))},
        "bins": {"edges": [float(e) for e in edges], "available": [int(a) for a in available],
                 "sampled": [int(s) for s in sampled]},
        "models": report_models,
    }


def _summarise(points: list[dict], bin_of: np.ndarray, bins: int) -> dict:
    freq = np.array([p["frequency"] for p in points], dtype=np.float64)
    out = {"points": points, "bin_medians": [], "fit": {}}
    for q in ("lam_per_row", "lam_total"):
        lam = np.array([np.nan if p[q] is None else p[q] for p in points], dtype=np.float64)
        out["fit"][q] = loglog_fit(freq, lam)
    for b in range(bins):
        sel = [i for i in range(len(points)) if bin_of[i] == b]
        row = {"bin": b, "n": len(sel), "frequency": _median(freq[sel])}
        for q in ("lam_per_row", "lam_total"):
            row[q] = _median([points[i][q] for i in sel if points[i][q] is not None])
        out["bin_medians"].append(row)
    out["nonpositive"] = int(sum(1 for p in points if p["lam_per_row"] is None or p["lam_per_row"] <= 0))
    out["unconverged"] = int(sum(1 for p in points if not p["converged"]))
    return out


# ------------------------------------------------------------------------------------------------- figure


def sharpness_figure(report: dict) -> bytes:
    """PNG (Agg): two log-log panels, lam_total and lam_per_row against training frequency; per model (one
    colour each) the sampled points, the per-bin medians (markers) and the least-squares fit line."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(12, 5), dpi=110)
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, 2)
    colours = ["tab:blue", "tab:orange", "tab:green", "tab:red", "tab:purple", "tab:brown", "tab:pink",
               "tab:gray", "tab:olive", "tab:cyan"]
    titles = {"lam_total": "lam_total: block of the whole-sample loss Hessian (~ n_v by construction)",
              "lam_per_row": "lam_per_row: Hessian of the mean loss over the value's rows"}
    models = report.get("models") or {}
    for ax, q in zip(axes, ("lam_total", "lam_per_row")):
        drawn = False
        for i, (name, m) in enumerate(models.items()):
            col = colours[i % len(colours)]
            pts = [(p["frequency"], p[q]) for p in m.get("points", []) if p.get(q) is not None and p[q] > 0
                   and p["frequency"] > 0]
            if pts:
                fx, fy = zip(*pts)
                ax.scatter(fx, fy, s=6, color=col, alpha=0.25, linewidths=0)
                drawn = True
            med = [(b["frequency"], b[q]) for b in m.get("bin_medians", [])
                   if b.get("frequency") and b.get(q) is not None and b[q] > 0]
            fit = (m.get("fit") or {}).get(q) or {}
            label = name
            if fit.get("slope") is not None:
                r = fit.get("r")
                label += f" (slope {fit['slope']:.2f}" + (f", r {r:.2f})" if r is not None else ")")
            if med:
                mx, my = zip(*med)
                ax.plot(mx, my, marker="o", ms=6, lw=0.8, color=col, markeredgecolor="black",
                        markeredgewidth=0.5, label=label)
                drawn = True
            if fit.get("slope") is not None and pts:
                lo, hi = min(p[0] for p in pts), max(p[0] for p in pts)
                xs = np.logspace(math.log10(lo), math.log10(hi), 50)
                ax.plot(xs, 10 ** fit["intercept"] * xs ** fit["slope"], ls="--", lw=1.2, color=col)
        if drawn:
            ax.set_xscale("log")
            ax.set_yscale("log")
            ax.legend(fontsize=8, loc="best", title="optimizer: bin medians, fit (dashed)", title_fontsize=8)
        else:
            ax.text(0.5, 0.5, "no positive eigenvalues", ha="center", va="center", transform=ax.transAxes)
        ax.set_xlabel("training frequency of the feature value (occurrences, log)")
        ax.set_ylabel(f"top Hessian eigenvalue {q} (log)")
        ax.set_title(titles[q], fontsize=9)
        ax.grid(True, which="major", alpha=0.3)
    s = report.get("settings") or {}
    sub = ", ".join(f"{k}={s[k]}" for k in ("rows", "bins", "values_per_bin", "max_rows_per_value", "iters")
                    if k in s)
    fig.suptitle("Top Hessian eigenvalue of a feature value's embedding vs its training frequency"
                 + (f"\n{sub}" if sub else ""), fontsize=11)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return buf.getvalue()
