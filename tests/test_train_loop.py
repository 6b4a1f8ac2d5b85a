"""The one training loop and the step rules (Adam, SAM, Helen) on a tiny embedding model."""

import copy

import numpy as np
import pytest
import torch
from torch import nn

from pipeline.core.data import TensorData
from pipeline.core.train import LoopConfig, Trainer
from pipeline.ctr.optim import Helen, build_step_rule
from pipeline.ctr.task import CtrTask


class Tiny(nn.Module):
    """Per-field embeddings -> dropout -> linear: enough to exercise every part of the loop."""

    def __init__(self, vocab=(11, 7, 5), dim=4, dropout=0.0):
        super().__init__()
        self.tables = nn.ModuleList(nn.Embedding(v, dim) for v in vocab)
        self.drop = nn.Dropout(dropout)
        self.out = nn.Linear(dim * len(vocab), 1)

    def forward(self, x):
        e = torch.cat([t(x[:, i]) for i, t in enumerate(self.tables)], 1)
        return self.out(self.drop(e)).squeeze(1)


def tiny_data(n=600, seed=0, vocab=(11, 7, 5)):
    teacher = np.random.default_rng(42)                 # one teacher for every split
    w = [teacher.normal(size=v) for v in vocab]
    g = np.random.default_rng(seed)
    x = np.stack([g.integers(1, v, n) for v in vocab], 1).astype(np.int32)
    logit = sum(w[i][x[:, i]] for i in range(len(vocab))) - 1.0
    y = (g.random(n) < 1 / (1 + np.exp(-logit))).astype(np.float32)
    return TensorData(torch.from_numpy(x), torch.from_numpy(y), None)


def make(rule="adam", dropout=0.0, seed=0, **rule_kw):
    torch.manual_seed(seed)
    m = Tiny(dropout=dropout)
    emb = [t.weight for t in m.tables]
    net = list(m.out.parameters())
    kw = dict(lr_embed=0.05, lr_net=0.05, rho=0.05, bound=0.3, net_pert=True, helen_variant="recdag", clip_norm=10.0)
    kw.update(rule_kw)
    r = build_step_rule(rule, field_tables=list(enumerate(m.tables)), embed_params=emb, net_params=net, **kw)
    return m, r


def trainer(m, r, tmp, monitor="auc", **cfg):
    c = dict(epochs=4, batch_size=64, seed=3, patience=2)
    c.update(cfg)
    return Trainer(m, r, LoopConfig(**c), embedding_params=[t.weight for t in m.tables], checkpoint_dir=tmp,
                   task=CtrTask(monitor))


def test_training_improves_auc(tmp_path):
    train, valid = tiny_data(2000, 0), tiny_data(800, 1)
    m, r = make()
    t = trainer(m, r, tmp_path / "ck", epochs=3)
    before = t.evaluate(valid)["auc"]
    s = t.fit(train, valid)
    assert s.finished and t.evaluate(valid)["auc"] > before + 0.05


def test_early_stop_and_lr_sequence_on_scripted_metrics(tmp_path, monkeypatch):
    m, r = make(lr_embed=1e-3, lr_net=1e-3)
    t = trainer(m, r, tmp_path, epochs=20, patience=2, lr_decay=0.1, min_lr=2e-6)
    scripted = iter([0.70, 0.72, 0.71, 0.73, 0.73, 0.725, 0.9])
    monkeypatch.setattr(t, "evaluate", lambda data: {"auc": next(scripted), "logloss": 0.4})
    s = t.fit(tiny_data(64), tiny_data(64, 1))
    lrs = [h["lr"] for h in s.history]
    improved = [h["improved"] for h in s.history]
    assert improved == [True, True, False, True, False, False]       # stops after 2 bad evals in a row
    assert lrs == pytest.approx([1e-3, 1e-3, 1e-3, 1e-4, 1e-4, 1e-5])  # lr logged before this eval's decay
    assert [g["lr"] for g in r.optimizer.param_groups] == pytest.approx([2e-6, 2e-6])   # floor min_lr
    assert s.best == pytest.approx(0.73) and s.best_epoch == 4 and s.stopped


def test_best_checkpoint_is_reloaded(tmp_path, monkeypatch):
    m, r = make()
    t = trainer(m, r, tmp_path, epochs=3, patience=5)
    scripted = iter([0.9, 0.5, 0.5])
    snaps = []

    def fake(data):
        snaps.append(copy.deepcopy(m.state_dict()))
        return {"auc": next(scripted), "logloss": 0.3}
    monkeypatch.setattr(t, "evaluate", fake)
    t.fit(tiny_data(128), tiny_data(64, 1))
    for k, v in m.state_dict().items():
        assert torch.equal(v, snaps[0][k])


@pytest.mark.parametrize("rule", ["adam", "sam", "helen"])
def test_resume_gives_the_same_final_metrics(tmp_path, rule):
    train, valid = tiny_data(700, 0), tiny_data(300, 1)
    m1, r1 = make(rule, dropout=0.3, seed=1)
    full = trainer(m1, r1, tmp_path / "a", epochs=3, checkpoint_every_steps=4)
    full.fit(train, valid)
    ref = full.evaluate(valid)

    m2, r2 = make(rule, dropout=0.3, seed=1)
    part = trainer(m2, r2, tmp_path / "b", epochs=3, checkpoint_every_steps=4, max_steps=17)
    part.fit(train, valid)                                           # "killed" after 17 steps
    torch.manual_seed(12345)                                         # a restarted process has other RNG state
    m3, r3 = make(rule, dropout=0.3, seed=99)                        # fresh weights, overwritten by resume
    again = trainer(m3, r3, tmp_path / "b", epochs=3, checkpoint_every_steps=4)
    assert again.try_resume() and again.state.global_step == 16 and again.state.history  # from last.pt
    s = again.fit(train, valid)
    assert s.finished and len(s.history) == len(full.state.history)
    got = again.evaluate(valid)
    assert got == ref
    for k, v in m1.state_dict().items():
        assert torch.equal(v, m3.state_dict()[k]), k


def test_regularizers_follow_fuxictr(tmp_path):
    m, r = make()
    t = trainer(m, r, tmp_path, embedding_regularizer=0.1, net_regularizer=0.01)
    emb = sum((tb.weight ** 2).sum() for tb in m.tables)
    net = sum((p ** 2).sum() for p in m.out.parameters())
    assert float(t._regularizer().detach()) == pytest.approx(float(0.05 * emb + 0.005 * net), rel=1e-6)


def _grads(m, x, y):
    m.zero_grad()
    nn.functional.binary_cross_entropy_with_logits(m(x), y).backward()
    return {n: p.grad.clone() for n, p in m.named_parameters()}


def test_helen_perturbation_matches_hand_computation():
    torch.manual_seed(0)
    m = Tiny(vocab=(6, 4), dim=3)
    x = torch.tensor([[1, 2], [1, 3], [4, 2], [1, 2]], dtype=torch.int32)
    y = torch.tensor([1.0, 0.0, 1.0, 0.0])
    rho, bound = 0.5, 0.3
    g = _grads(m, x, y)
    w0 = {n: p.detach().clone() for n, p in m.named_parameters()}
    # by hand: field 0 ids 1,1,4,1 -> counts {1: 3, 4: 1} -> scale {1: 1, 4: 1/3, others: bound}
    s0 = torch.full((6,), bound)
    s0[1], s0[4] = 1.0, 1 / 3
    e0 = rho * g["tables.0.weight"] / g["tables.0.weight"].norm() * s0[:, None]
    s1 = torch.full((4,), bound)                                    # ids 2,3,2,2 -> {2: 1, 3: 1/3 -> bound}
    s1[2], s1[3] = 1.0, max(1 / 3, bound)
    e1 = rho * g["tables.1.weight"] / g["tables.1.weight"].norm() * s1[:, None]
    gnorm = torch.norm(torch.stack([v.norm() for v in g.values()]))
    e_out = {n: rho * g[n] / gnorm for n in ("out.weight", "out.bias")}

    seen = {}
    opt = Helen(list(enumerate(m.tables)), list(m.out.parameters()), lr_embed=0.0, lr_net=0.0, rho=rho,
                bound=bound, net_pert=True)
    calls = []

    def closure():
        calls.append(1)
        if len(calls) == 2:                                        # at the perturbed point
            seen.update({n: p.detach().clone() for n, p in m.named_parameters()})
        loss = nn.functional.binary_cross_entropy_with_logits(m(x), y)
        loss.backward()
        return loss.detach()
    opt.step(x, closure)
    torch.testing.assert_close(seen["tables.0.weight"] - w0["tables.0.weight"], e0)
    torch.testing.assert_close(seen["tables.1.weight"] - w0["tables.1.weight"], e1)
    for n, e in e_out.items():
        torch.testing.assert_close(seen[n] - w0[n], e)
    for n, p in m.named_parameters():                              # restored (lr 0: no update)
        torch.testing.assert_close(p.detach(), w0[n])


def test_helen_release_variant_divides_by_the_last_table_norm():
    torch.manual_seed(0)
    m = Tiny(vocab=(6, 4), dim=3)
    x = torch.tensor([[1, 2], [4, 3]], dtype=torch.int32)
    y = torch.tensor([1.0, 0.0])
    g = _grads(m, x, y)
    w0 = m.out.weight.detach().clone()
    opt = Helen(list(enumerate(m.tables)), list(m.out.parameters()), lr_embed=0.0, lr_net=0.0, rho=0.5,
                bound=0.3, net_pert=True, variant="release")
    seen = {}

    def closure():
        if "w" not in seen and opt.optimizer.state == {} and len(seen) == 0 and getattr(closure, "n", 0) == 1:
            seen["w"] = m.out.weight.detach().clone()
        closure.n = getattr(closure, "n", 0) + 1
        loss = nn.functional.binary_cross_entropy_with_logits(m(x), y)
        loss.backward()
        return loss.detach()
    opt.step(x, closure)
    torch.testing.assert_close(seen["w"] - w0, 0.5 * g["out.weight"] / g["tables.1.weight"].norm())


@pytest.mark.parametrize("net_pert", [True, False])
def test_helen_with_rho_zero_equals_adam_step_for_step(net_pert):
    data = tiny_data(256)
    ma, ra = make("adam", clip_norm=0.0)
    mh, rh = make("helen", rho=0.0, net_pert=net_pert)
    for x, y, _ in data.batches(32, seed=1):
        for m, r in ((ma, ra), (mh, rh)):
            def closure(m=m, x=x, y=y):
                loss = nn.functional.binary_cross_entropy_with_logits(m(x), y)
                loss.backward()
                return loss.detach()
            r.step(x, closure)
        for (n, a), (_, b) in zip(ma.named_parameters(), mh.named_parameters()):
            torch.testing.assert_close(a, b, msg=n)


def test_sam_perturbs_then_restores():
    m, r = make("sam", rho=0.3)
    m_ref = copy.deepcopy(m)
    x = torch.tensor([[1, 2, 3], [4, 5, 1]], dtype=torch.int32)
    y = torch.tensor([1.0, 0.0])
    g = _grads(m_ref, x, y)
    gnorm = torch.norm(torch.stack([v.norm() for v in g.values()]))
    w0 = {n: p.detach().clone() for n, p in m.named_parameters()}
    at = []

    def closure():
        at.append({n: p.detach().clone() for n, p in m.named_parameters()})
        loss = nn.functional.binary_cross_entropy_with_logits(m(x), y)
        loss.backward()
        return loss.detach()
    r.optimizer.param_groups[0]["lr"] = r.optimizer.param_groups[1]["lr"] = 0.0
    r.step(x, closure)
    for n in w0:
        torch.testing.assert_close(at[1][n] - w0[n], 0.3 * g[n] / gnorm)       # second pass at w + eps
        torch.testing.assert_close(dict(m.named_parameters())[n].detach(), w0[n])  # restored


def test_adam_clips_grad_norm():
    m, r = make("adam", clip_norm=1e-3)
    x = torch.tensor([[1, 2, 3]], dtype=torch.int32)

    def closure():
        loss = 100 * nn.functional.binary_cross_entropy_with_logits(m(x), torch.tensor([1.0]))
        loss.backward()
        return loss.detach()
    r.step(x, closure)
    total = torch.norm(torch.stack([p.grad.norm() for p in m.parameters() if p.grad is not None]))
    assert float(total) == pytest.approx(1e-3, rel=1e-3)


def test_unknown_optimizer():
    with pytest.raises(ValueError, match="optim.name: 'sgd'"):
        make("sgd")


@pytest.mark.parametrize("epochs, steps", [(1, [3, 4]), (2, [3, 6, 8])])
def test_steps_after_the_last_periodic_validation_are_validated(tmp_path, epochs, steps):
    m, r = make()
    t = trainer(m, r, tmp_path, epochs=epochs, patience=10, eval_every_steps=3)
    s = t.fit(tiny_data(256), tiny_data(64, 1))                     # 4 steps an epoch at batch 64
    assert s.finished and [h["step"] for h in s.history] == steps   # the last step always counts
