"""SASRec-style model, the sampled loss (one pass vs loop, logQ, accidental hits) and the one-cycle rule."""

import math

import numpy as np
import pytest
import torch

from pipeline.core.optim import OneCycleAdam, one_cycle_lr
from pipeline.seqrec.model import build_model, parameter_counts
from pipeline.seqrec.train import SeqRecTask

N_ITEMS, VOCAB = 30, 50


def text_tokens(seed=0):
    g = torch.Generator().manual_seed(seed)
    title = torch.randint(2, VOCAB, (N_ITEMS + 1, 6), generator=g)
    title[:, 4:] = 0
    title[0] = 0
    brand = torch.randint(2, VOCAB, (N_ITEMS + 1, 2), generator=g)
    brand[0] = 0
    return title, brand


def model(kind, dropout=0.0, arch="recdag"):
    torch.manual_seed(0)
    kw = dict(dim=16, layers=2, heads=2, ffn_mult=2, max_len=8, dropout=dropout, arch=arch)
    if kind == "id":
        return build_model("id", num_items=N_ITEMS, **kw).eval()
    t, b = text_tokens()
    return build_model("text", vocab_size=VOCAB, title_tokens=t, brand_tokens=b, **kw).eval()


@pytest.mark.parametrize("arch", ["recdag", "srt"])
@pytest.mark.parametrize("kind", ["id", "text"])
def test_causal_mask_future_item_does_not_change_the_past(kind, arch):
    m = model(kind, arch=arch)
    seq = torch.tensor([[0, 0, 3, 7, 9, 4, 11, 2]])
    h = m(seq)
    for t in range(2, 7):
        changed = seq.clone()
        changed[0, t + 1] = 20
        h2 = m(changed)
        assert torch.allclose(h[0, :t + 1], h2[0, :t + 1], atol=1e-6)      # positions <= t unchanged
        assert not torch.allclose(h[0, t + 1], h2[0, t + 1])                # position t+1 sees its own item


def test_left_padding_is_invisible():
    m = model("text")
    a = m(torch.tensor([[0, 0, 0, 5, 6, 7, 8, 9]]))[0, -1]
    b = m(torch.tensor([[0, 0, 0, 0, 0, 0, 0, 0]]))                          # all padding: no NaN
    assert torch.isfinite(b).all()
    # the padded prefix length does not matter beyond the (right-aligned) positions
    c = m(torch.tensor([[0, 0, 0, 5, 6, 7, 8, 9]]))[0, -1]
    assert torch.allclose(a, c)


def test_text_model_params_do_not_depend_on_the_catalogue():
    m1 = model("text")
    t, b = text_tokens()
    m2 = build_model("text", vocab_size=VOCAB, title_tokens=torch.cat([t, t[1:]]), brand_tokens=torch.cat([b, b[1:]]),
                     dim=16, layers=2, heads=2, ffn_mult=2, max_len=8, dropout=0.0)
    assert parameter_counts(m1) == parameter_counts(m2)
    m2.load_state_dict(m1.state_dict())                                      # catalogue buffers are not saved
    c = parameter_counts(model("id"))
    assert c["params_total"] - c["params_non_embedding"] == (N_ITEMS + 1) * 16 + 8 * 16


def task(logq=True, pop=None):
    pop = np.arange(N_ITEMS + 1, dtype=float) if pop is None else pop
    return SeqRecTask(loss="sampled", num_items=N_ITEMS, num_negatives=12, popularity=pop, logq=logq)


@pytest.mark.parametrize("kind", ["id", "text"])
def test_one_pass_negatives_equal_a_per_negative_loop(kind):
    m = model(kind).train()
    t = task()
    h = torch.randn(10, 16)
    pos = torch.randint(1, N_ITEMS + 1, (10,))
    neg = torch.tensor([3, 5, 5, 8, 13, 21, 1, 2, 30, 29, 7, 4])
    pos[0] = 5                                                                # an accidental hit (twice)
    h1 = h.clone().requires_grad_()
    h2 = h.clone().requires_grad_()
    l1 = t.sampled_loss(m, h1, pos, neg)
    l2 = t.sampled_loss_loop(m, h2, pos, neg)
    assert torch.allclose(l1, l2, atol=1e-6)
    g1 = torch.autograd.grad(l1, [h1, *m.parameters()], allow_unused=True)
    g2 = torch.autograd.grad(l2, [h2, *m.parameters()], allow_unused=True)
    for a, b in zip(g1, g2):
        assert (a is None) == (b is None)
        if a is not None:
            assert torch.allclose(a, b, atol=1e-6)


def test_logq_and_accidental_hits_by_hand():
    m = model("id")
    pop = np.zeros(N_ITEMS + 1)
    pop[1:] = np.arange(1, N_ITEMS + 1)
    t = task(logq=True, pop=pop)
    q = pop / pop.sum()
    h = torch.randn(1, 16)
    pos, neg = torch.tensor([4]), torch.tensor([4, 9, 17])
    with torch.no_grad():
        loss = float(t.sampled_loss(m, h, pos, neg))
        s = (h @ m.item_vectors(torch.tensor([4, 9, 17])).T)[0].numpy().astype(float)
    corrected = s - np.log(q[[4, 9, 17]])
    logits = np.array([corrected[0], corrected[1], corrected[2]])     # negative 4 == positive: masked
    expected = -(logits[0] - np.log(np.exp(logits).sum()))
    assert loss == pytest.approx(expected, rel=1e-5)
    # without logQ the popular negative 17 weighs more: different loss
    t_off = task(logq=False, pop=pop)
    with torch.no_grad():
        off = float(t_off.sampled_loss(m, h, pos, neg))
    assert off == pytest.approx(-(s[0] - np.log(np.exp(s[[0, 1, 2]]).sum())), rel=1e-5)
    assert off != pytest.approx(loss)
    # uniform sampling: the correction is a constant shift and changes nothing
    uni = np.ones(N_ITEMS + 1)
    with torch.no_grad():
        a = float(task(True, uni).sampled_loss(m, h, pos, neg))
        b = float(task(False, uni).sampled_loss(m, h, pos, neg))
    assert a == pytest.approx(b, rel=1e-6)


def test_negatives_follow_popularity():
    pop = np.zeros(N_ITEMS + 1)
    pop[1:] = 1.0
    pop[7] = 100.0
    t = task(pop=pop)
    torch.manual_seed(0)
    draws = torch.cat([t.draw_negatives() for _ in range(200)])
    assert (draws == 0).sum() == 0
    assert 0.7 < float((draws == 7).float().mean()) < 0.85                    # 100 / 129


def test_one_cycle_shape():
    total, lr = 100, 1e-3
    lrs = [one_cycle_lr(s, total, lr, 0.3, 25.0, 1e4) for s in range(total)]
    assert lrs[0] == pytest.approx(lr / 25)
    peak = int(np.argmax(lrs))
    assert peak == 30 and lrs[peak] == pytest.approx(lr)
    assert all(a < b for a, b in zip(lrs[:30], lrs[1:31]))                    # warm-up rises
    assert all(a >= b for a, b in zip(lrs[30:], lrs[31:]))                    # cosine falls
    assert one_cycle_lr(total, total, lr, 0.3, 25.0, 1e4) == pytest.approx(lr / 25 / 1e4)
    mid = one_cycle_lr(30 + 35, total, lr, 0.3, 25.0, 1e4)                    # half-way down the cosine
    assert mid == pytest.approx((lr + lr / 25 / 1e4) / 2)


def test_one_cycle_rule_sets_lr_per_step_and_resumes():
    p = torch.nn.Parameter(torch.ones(3))
    rule = OneCycleAdam([p], lr=1e-2, weight_decay=1e-5, clip_norm=1.0, total_steps=10, warmup=0.3,
                        div_factor=10.0, final_div_factor=100.0)

    def closure():
        loss = (p * p).sum() * 100
        loss.backward()
        return loss.detach()

    seen = []
    for _ in range(4):
        rule.step(None, closure)
        seen.append(rule.optimizer.param_groups[0]["lr"])
    assert seen == pytest.approx([rule.lr_at(s) for s in range(4)])
    assert float(p.grad.norm()) == pytest.approx(1.0, rel=1e-5)                # raw norm ~ 340: clipped to 1.0
    state = rule.state_dict()
    q = torch.nn.Parameter(p.detach().clone())
    rule2 = OneCycleAdam([q], lr=1e-2, weight_decay=1e-5, clip_norm=1.0, total_steps=10, warmup=0.3,
                         div_factor=10.0, final_div_factor=100.0)
    rule2.load_state_dict(state)
    assert rule2.steps == 4 and rule2.lr_at(rule2.steps) == pytest.approx(rule.lr_at(4))
    assert math.isclose(rule2.lr_at(9), rule.lr_at(9))


@pytest.mark.parametrize("arch", ["recdag", "srt"])
@pytest.mark.parametrize("kind", ["id", "text"])
def test_packed_rows_compute_what_padded_rows_compute(kind, arch):
    """Training and evaluation pack several sequences a row; every real position gets the hidden state it
    gets in its own left-padded row, and no padding is computed (both block layouts and position rules)."""
    from pipeline.seqrec.train import last_hidden, pack_rows

    m = model(kind, arch=arch)
    g = torch.Generator().manual_seed(3)
    lens = [1, 3, 8, 2, 5, 1, 7, 4, 2]
    rows = torch.zeros((len(lens), 8), dtype=torch.long)
    for k, n in enumerate(lens):
        rows[k, 8 - n:] = torch.randint(1, N_ITEMS + 1, (n,), generator=g)
    tgt = rows.roll(-1, 1) * (rows != 0)                        # any aligned tensor is moved the same way
    p, pt, seg, last = pack_rows(rows, tgt)
    assert len(p) == 5 < len(rows)                              # 33 tokens in rows of 8: 5 rows, first fit
    assert sorted(p[p != 0].tolist()) == sorted(rows[rows != 0].tolist())
    assert torch.equal(pt[seg != 0].sort().values, tgt[rows != 0].sort().values)
    padded, packed = m(rows), m(p, seg)
    for k, n in enumerate(lens):
        mine = packed[seg == k + 1]                             # in order within the packed row
        assert torch.allclose(mine, padded[k, 8 - n:], atol=1e-5)
    assert torch.allclose(last_hidden(m, rows), padded[:, -1], atol=1e-5)


@pytest.mark.parametrize("arch", ["recdag", "srt"])
def test_packed_causal_mask_keeps_sequences_apart(arch):
    m = model("id", arch=arch)
    seq = torch.tensor([[3, 7, 9, 4, 11, 2, 0, 0]])
    seg = torch.tensor([[1, 1, 1, 2, 2, 2, 0, 0]])
    h = m(seq, seg)
    other = seq.clone()
    other[0, 3:6] = torch.tensor([20, 21, 22])                  # change the second sequence only
    assert torch.allclose(h[0, :3], m(other, seg)[0, :3], atol=1e-6)
    changed = seq.clone()
    changed[0, 2] = 20                                          # the first sequence's last item
    assert torch.allclose(h[0, 3:6], m(changed, seg)[0, 3:6], atol=1e-6)
    assert torch.allclose(h[0, :2], m(changed, seg)[0, :2], atol=1e-6)
