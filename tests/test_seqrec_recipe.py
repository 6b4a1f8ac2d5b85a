"""The seed's recipe as released (``recipe: srt``, pipeline/seqrec/recipe.py) beside recdag's: the one-cycle
schedule as SRT calls torch's OneCycleLR, gradient accumulation, progressive unfreezing (which parameters get
gradients in which phase), EWC, per-row popularity(+1) negatives, the post-LN architecture, run configs,
fine-tuning on a share of the users, and the Amazon study's tables."""

import copy
import dataclasses
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from pipeline.core.errors import ConfigError
from pipeline.core.params import load_stage
from pipeline.seqrec import study
from pipeline.seqrec.model import build_model
from pipeline.seqrec.params import AmazonParams, FinetuneParams, PretrainParams
from pipeline.seqrec.recipe import EWCPenalty, SrtOneCycleAdam, progressive_phases, set_trainable
from pipeline.seqrec.run import RunConfig, SeqDataset, make_model, run_config, train_and_evaluate
from pipeline.seqrec.train import SeqRecTask
from tests.conftest import ROOT

N_ITEMS, VOCAB = 20, 40


def text_model(arch="srt", layers=2):
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(1)
    title = torch.randint(2, VOCAB, (N_ITEMS + 1, 4), generator=g)
    brand = torch.randint(2, VOCAB, (N_ITEMS + 1, 1), generator=g)
    title[0], brand[0] = 0, 0
    return build_model("text", vocab_size=VOCAB, title_tokens=title, brand_tokens=brand, dim=16, layers=layers,
                       heads=2, ffn_mult=2, max_len=8, dropout=0.0, arch=arch)


# ------------------------------------------------------------------------------------------------ the schedule


def srt_lr(step: int, total: int, peak: float, pct=0.3, div=25.0, final_div=0.1) -> float:
    """An independent transcription of the schedule the release gets from OneCycleLR(max_lr=peak,
    pct_start=0.3, anneal_strategy='cos', final_div_factor=0.1): cosine from peak/div up to peak over
    pct·total − 1 steps, then cosine down to (peak/div)/final_div at step total − 1."""
    start, end = peak / div, peak / div / final_div
    up = pct * total - 1

    def cos(a, b, frac):
        return b + (a - b) / 2 * (1 + math.cos(math.pi * frac))

    if step <= up:
        return cos(start, peak, step / up)
    return cos(peak, end, (step - up) / (total - 1 - up))


def test_srt_one_cycle_is_torch_onecycle_as_the_release_calls_it():
    w = torch.nn.Parameter(torch.ones(3))
    rule = SrtOneCycleAdam([w], lr=1e-3, weight_decay=0.0, epochs=4, steps_per_epoch=10, pct_start=0.3,
                           div_factor=25.0, final_div_factor=0.1)
    lrs, betas = [], []
    for _ in range(40):
        lrs.append(rule.optimizer.param_groups[0]["lr"])
        betas.append(rule.optimizer.param_groups[0]["betas"][0])
        rule.step(None, lambda: (w.sum()).backward() or torch.tensor(0.0))
    for t in (0, 5, 11, 20, 39):
        assert math.isclose(lrs[t], srt_lr(t, 40, 1e-3), rel_tol=1e-6), t
    assert math.isclose(lrs[0], 1e-3 / 25) and max(lrs) == pytest.approx(1e-3)
    assert lrs[-1] == pytest.approx(1e-3 / 2.5, rel=1e-6)          # ends at peak / 2.5, not near zero
    assert betas[0] == pytest.approx(0.95) and min(betas) == pytest.approx(0.85) and betas[-1] == pytest.approx(0.95)
    assert int(np.argmax(lrs)) == int(np.argmin(betas)) == 11       # β1 cycles against the lr


def test_srt_rule_accumulates_and_resumes():
    """Optimizer steps at batches 0, 3, 6 of each 7-batch epoch (batch_idx % 3 == 0, the counter restarting
    each epoch), the scheduler every batch; a rule rebuilt from its state_dict continues identically."""
    def make():
        torch.manual_seed(0)
        w = torch.nn.Parameter(torch.ones(2))
        return w, SrtOneCycleAdam([w], lr=0.1, weight_decay=0.0, epochs=2, steps_per_epoch=7, pct_start=0.3,
                                  div_factor=25.0, final_div_factor=0.1, accumulate=3)

    w, rule = make()
    moved, state, w_at = [], None, None
    for b in range(14):
        before = w.detach().clone()
        rule.step(None, lambda: (w * w).sum().backward() or torch.tensor(0.0))
        moved.append(not torch.equal(before, w.detach()))
        if b == 8:
            state, w_at = copy.deepcopy(rule.state_dict()), w.detach().clone()   # as saved to disk
    assert [b for b, m in enumerate(moved) if m] == [0, 3, 6, 7, 10, 13]
    w2, rule2 = make()
    with torch.no_grad():
        w2.copy_(w_at)
    rule2.load_state_dict(state)
    assert rule2.batches == 9
    for _ in range(5):
        rule2.step(None, lambda: (w2 * w2).sum().backward() or torch.tensor(0.0))
    assert torch.allclose(w2, w) and rule2.optimizer.param_groups[0]["lr"] == rule.optimizer.param_groups[0]["lr"]


# ------------------------------------------------------------------------------------------------ unfreezing


def test_progressive_phases_follow_the_release():
    ph = progressive_phases(3, 10, 50, True)
    assert [(p.name, p.epochs, p.freeze_embeddings, p.top_blocks) for p in ph] == [
        ("unfreeze-1", 10, True, 1), ("unfreeze-2", 10, True, 2), ("unfreeze-3", 10, True, 3), ("all", 50, False, -1)]
    assert [p.name for p in progressive_phases(2, 0, 5, True)] == ["all"]


def test_set_trainable_freezes_embeddings_and_lower_blocks():
    m = text_model(layers=3)
    set_trainable(m, True, 1)
    trainable = {n.split(".")[0] + ("." + n.split(".")[1] if n.startswith("blocks") else "")
                 for n, p in m.named_parameters() if p.requires_grad}
    assert trainable == {"blocks.2", "items", "ln"}                      # items: the projection only
    assert not m.items.tok.weight.requires_grad and not m.pos.weight.requires_grad
    assert m.items.proj.weight.requires_grad
    set_trainable(m, False, -1)
    assert all(p.requires_grad for p in m.parameters())


def toy():
    g = np.random.default_rng(0)
    seqs = []
    for _ in range(60):
        start, n = int(g.integers(1, N_ITEMS + 1)), int(g.integers(5, 10))
        seqs.append(np.array([(start + k - 1) % N_ITEMS + 1 for k in range(n)]))
    return SeqDataset("toy", [f"u{k}" for k in range(60)], seqs, [f"i{k}" for k in range(1, N_ITEMS + 1)], None)


def srt_cfg(**kw):
    base = dict(item_repr="id", layers=2, dim=16, heads=2, ffn_mult=2, dropout=0.0, max_len=8, loss="sampled",
                num_negatives=6, neg_alpha=1.0, logq=True, epochs=3, batch_size=16, lr=1e-2, weight_decay=0.0,
                clip_norm=0.0, warmup=0.3, div_factor=25.0, final_div_factor=100.0, patience=9,
                protocol="full_ranking", eval_negatives=0, eval_users=0, mask_history=True, monitor="ndcg@10",
                seed=3, arch="srt", recipe="srt", negatives="per_row", smoothing=1.0)
    return RunConfig(**{**base, **kw})


def test_which_parameters_train_in_which_phase(tmp_path):
    """A progressive run (2 blocks, 1 epoch per layer, 1 final epoch, 4 batches an epoch): the parameters
    with gradients at every batch are exactly the phase's; frozen ones do not move; the last epoch is kept."""
    phases = tuple(progressive_phases(2, 1, 1, True))
    cfg = srt_cfg(phases=phases, keep="last", epochs=3)
    ds = toy()
    m = make_model(cfg, ds, None, 0)
    start = {n: p.detach().clone() for n, p in m.named_parameters()}
    seen = []

    def probe(model):
        seen.append(frozenset(n for n, p in model.named_parameters() if p.requires_grad))
        return torch.zeros(())

    res = train_and_evaluate(cfg, ds, m, checkpoint_dir=tmp_path / "ck", tb_dir=None, oracle=None, penalty=probe)
    blocks = {n for n in start if n.startswith("blocks.")}
    top = {n for n in blocks if n.startswith("blocks.1.")}
    rest = {"ln.weight", "ln.bias"}
    assert len(seen) == 12 and res["phases"] == ["unfreeze-1", "unfreeze-2", "all"] and res["epochs_run"] == 3
    assert set(seen[0]) == top | rest and set(seen[4]) == blocks | rest and set(seen[8]) == set(start)
    assert all(s == seen[0] for s in seen[:4]) and all(s == seen[4] for s in seen[4:8])
    assert [h["phase"] for h in res["history"]] == ["unfreeze-1", "unfreeze-2", "all"]
    assert res["best_epoch"] == 3                                    # keep: last (the release's saved=False)
    assert all(p.requires_grad for p in m.parameters())


def test_which_parameters_move_in_the_first_phase(tmp_path):
    cfg = srt_cfg(phases=tuple(progressive_phases(2, 1, 0, True)[:1]), keep="last", epochs=1)
    ds = toy()
    m = make_model(cfg, ds, None, 0)
    start = {n: p.detach().clone() for n, p in m.named_parameters()}
    train_and_evaluate(cfg, ds, m, checkpoint_dir=tmp_path / "ck", tb_dir=None, oracle=None)
    moved = {n for n, p in m.named_parameters() if not torch.equal(p.detach(), start[n])}
    assert moved and all(n.startswith("blocks.1.") or n.startswith("ln.") for n in moved), moved


# ------------------------------------------------------------------------------------------------ EWC


def test_ewc_fisher_and_penalty_by_hand():
    torch.manual_seed(0)
    lin = torch.nn.Linear(3, 1)
    xs = [torch.randn(4, 3) for _ in range(3)]

    class Data:
        def batches(self, bs, seed, epoch):
            for x in xs:
                yield x, torch.zeros(len(x)), None

    class Task:
        def loss(self, model, x, y):
            return (model(x) ** 2).mean()

    pen = EWCPenalty.fit(100.0, lin, Task(), Data(), batch_size=4, batches=2, seed=0)
    grads = []
    for x in xs[:2]:
        lin.zero_grad()
        (lin(x) ** 2).mean().backward()
        grads.append(lin.weight.grad.detach().clone())
    fisher = (grads[0] ** 2 + grads[1] ** 2) / 2
    assert torch.allclose(pen.fisher["weight"], fisher)
    assert float(pen(lin).detach()) == 0.0
    with torch.no_grad():
        lin.weight += 0.5
    want = 100.0 * (fisher * 0.25).sum() + 100.0 * (pen.fisher["bias"] * 0).sum()
    assert float(pen(lin).detach()) == pytest.approx(float(want), rel=1e-5)


# ------------------------------------------------------------------------------------------------ negatives


def test_per_row_negatives_by_hand_with_popularity_plus_one():
    counts = np.array([0, 5, 0, 3, 1, 0, 0, 2, 0, 0, 4], dtype=np.int64)       # index 0 = padding
    task = SeqRecTask(loss="sampled", num_items=10, num_negatives=5, popularity=counts, negatives="per_row",
                      smoothing=1.0)
    q = (counts[1:] + 1.0) / (counts[1:] + 1.0).sum()
    assert torch.allclose(task.q[1:], torch.tensor(q, dtype=torch.float32)) and task.q[0] == 0
    torch.manual_seed(0)
    neg = task.draw_negatives(rows=3)
    assert neg.shape == (3, 5) and int(neg.min()) >= 1
    m = text_model("srt", layers=1).eval()
    h = torch.randn(3, 16)
    pos = torch.tensor([1, 3, 7])
    neg[1, 2] = 3                                                           # an accidental hit in row 1
    got = task.sampled_loss(m, h, pos, neg)
    rows = []
    for r in range(3):
        sp = h[r] @ m.item_vectors(pos[r:r + 1])[0] - math.log(q[pos[r] - 1])
        sn = m.item_vectors(neg[r]) @ h[r] - torch.log(torch.tensor(q, dtype=torch.float32)[neg[r] - 1])
        sn = sn.masked_fill(neg[r] == pos[r], float("-inf"))
        rows.append(-F.log_softmax(torch.cat([sp.view(1), sn]), 0)[0])
    assert torch.allclose(got, torch.stack(rows).mean(), atol=1e-5)


# ------------------------------------------------------------------------------------------------ configs


def params():
    p = load_stage(ROOT / "params.yaml", ("seed", "amazon", "pretrain", "finetune"),
                   (AmazonParams, PretrainParams, FinetuneParams))
    return p.pretrain, p.finetune


def test_run_configs_of_the_two_recipes():
    pt, f = params()
    assert pt.recipe == "recdag" and f.recipe == "recdag"                   # the default stays recdag's
    rec = run_config(pt, size=f.init_size, max_len=50, seed=1, run="beauty", finetune=f, variant="pretrained")
    assert (rec.arch, rec.negatives, rec.smoothing, rec.phases, rec.keep, rec.loss) == (
        "recdag", "shared", 0.0, (), "best", f.loss)
    spt, sf = study.with_recipe(pt, f, "srt")
    pre = run_config(spt, size=f.init_size, max_len=50, seed=1, run="x")
    assert (pre.arch, pre.recipe, pre.negatives, pre.smoothing, pre.clip_norm, pre.keep) == (
        "srt", "srt", "per_row", 1.0, 0.0, "best")
    scratch = run_config(spt, size=f.init_size, max_len=50, seed=1, run="beauty", finetune=sf)
    assert scratch.loss == "sampled" and scratch.num_negatives == sf.srt.num_negatives and scratch.phases == ()
    warm = run_config(spt, size=f.init_size, max_len=50, seed=1, run="beauty", finetune=sf, variant="pretrained")
    layers = int(f.init_size.split("x")[0])
    assert [p.name for p in warm.phases] == [f"unfreeze-{i}" for i in range(1, layers + 1)] + ["all"]
    assert warm.keep == "last" and warm.grad_accum == sf.srt.grad_accum and warm.ewc_lambda == sf.srt.ewc_lambda
    assert warm.num_negatives == spt.num_negatives and warm.epochs == layers * sf.srt.epochs_per_layer + sf.srt.final_epochs
    assert warm.seed == scratch.seed                                         # same data order for both
    a, b = (run_config(dataclasses.replace(pt, sizes=["1x32", "2x64"]), size=z, max_len=50, seed=1, run=f"100-{z}",
                       data="pretrain-100") for z in ("1x32", "2x64"))
    assert a.seed != b.seed and a.eval_seed == b.eval_seed          # paired: same users and candidates
    assert run_config(pt, size=f.init_size, max_len=50, seed=1, run="x", data="pretrain-400").eval_seed != a.eval_seed
    with pytest.raises(ConfigError, match="recipe"):
        study.with_recipe(pt, f, "paper")
    with pytest.raises(ConfigError, match="finetune.user_frac"):
        study.with_recipe(pt, f, "srt", user_frac=0.0)
    with pytest.raises(ConfigError, match="finetune.srt.grad_accum"):
        dataclasses.replace(f, srt=dataclasses.replace(f.srt, grad_accum=0)).validate()


def test_user_fraction_is_seeded_nested_and_evaluates_every_user(tmp_path):
    ds = toy()
    a, b = ds.training_users(0.1, 7), ds.training_users(0.5, 7)
    assert len(a) == 6 and len(b) == 30 and set(a) <= set(b) and np.array_equal(a, ds.training_users(0.1, 7))
    assert len(ds.training_users(1.0, 7)) == 60 and len(ds.training_users(0.001, 7)) == 1
    cfg = srt_cfg(recipe="recdag", arch="recdag", negatives="shared", smoothing=0.0, user_frac=0.1, epochs=1)
    res = train_and_evaluate(cfg, ds, make_model(cfg, ds, None, 0), checkpoint_dir=tmp_path / "ck", tb_dir=None,
                             oracle=None)
    assert res["train_users"] == 6 and res["metrics"]["test"]["users"] == 60


# ------------------------------------------------------------------------------------------------ the study


def test_power_law_recovers_its_exponent():
    x = [1e4, 1e5, 1e6]
    fit = study.power_law(x, [0.02 * v ** 0.15 for v in x])
    assert fit["alpha"] == pytest.approx(0.15, abs=1e-6) and fit["c"] == pytest.approx(0.02, rel=1e-4)
    assert fit["r2"] == pytest.approx(1.0)
    assert study.power_law([1e4], [0.1])["alpha"] is None


def test_transfer_and_scaling_tables():
    def rec(recipe, frac, s, p):
        return {"recipe": recipe, "dataset": "beauty", "user_frac": frac, "train_users": int(frac * 100),
                "users": 100, "protocol": "full_ranking", "split": "x", "synthetic": True,
                "scratch": {"ndcg@10": s}, "pretrained": {"ndcg@10": p}, "oracle_ndcg@10": 0.2}

    t = study.transfer_table([rec("srt", 0.05, 0.01, 0.1), rec("srt", 1.0, 0.15, 0.14),
                              rec("recdag", 0.05, 0.05, 0.04), rec("recdag", 1.0, 0.16, 0.16)])
    assert t["recipes"] == ["srt", "recdag"] and t["fracs"] == [0.05, 1.0]
    assert t["gains"]["beauty"]["srt"] == {"0.05": pytest.approx(0.09), "1.0": pytest.approx(-0.01)}
    assert t["transfer_at_smallest_frac"] == {"beauty/srt": True, "beauty/recdag": False}
    assert study.transfer_figure(t).startswith(b"\x89PNG")

    def srec(recipe, scale, size, n, y):
        return {"recipe": recipe, "size": size, "scale": scale, "interactions": scale, "params_non_embedding": n,
                "test_ndcg@5": y, "oracle_test_ndcg@5": 0.2, "protocol": "sampled_10000", "split": "x",
                "synthetic": True}

    s = study.scaling_table([srec("srt", 100, "2x64", 1e5, 0.1), srec("srt", 100, "1x32", 1e4, 0.05),
                             srec("srt", 400, "1x32", 1e4, 0.08), srec("srt", 400, "2x64", 1e5, 0.12)])
    assert [r["size"] for r in s["rows"]] == ["1x32", "2x64", "1x32", "2x64"]
    assert s["fits"]["srt"]["100"]["alpha"] == pytest.approx(math.log10(2), abs=1e-6)
    assert s["data_fits"]["srt"]["1x32"]["points"] == 2
    assert study.scaling_figure(s).startswith(b"\x89PNG")
    md = study.tables_markdown(t, s)
    assert "| beauty | srt | 0.05 | 5 | 0.0100 | 0.1000 | +0.0900 | 0.2000 |" in md and "alpha" in md
