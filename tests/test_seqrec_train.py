"""A seqrec run through the one training loop: it learns, and a killed run resumes to the same metrics."""

import numpy as np
import torch

from pipeline.seqrec.run import RunConfig, SeqDataset, make_model, train_and_evaluate


def dataset():
    g = np.random.default_rng(0)
    seqs = []
    for _ in range(60):                        # a cycle 1 -> 2 -> ... -> 20 -> 1 with random starts
        start, n = int(g.integers(1, 21)), int(g.integers(5, 12))
        seqs.append(np.array([(start + k - 1) % 20 + 1 for k in range(n)]))
    return SeqDataset("toy", [f"u{k}" for k in range(60)], seqs, [f"i{k}" for k in range(1, 21)], None)


def cfg(loss):
    return RunConfig(item_repr="id", layers=1, dim=16, heads=2, ffn_mult=2, dropout=0.1, max_len=8, loss=loss,
                     num_negatives=8, neg_alpha=1.0, logq=True, epochs=5, batch_size=16, lr=1e-2, weight_decay=1e-5,
                     clip_norm=1.0, warmup=0.3, div_factor=25.0, final_div_factor=100.0, patience=3,
                     protocol="full_ranking", eval_negatives=0, eval_users=0, mask_history=False, monitor="ndcg@10",
                     seed=5)


def run(tmp_path, loss, max_steps=0):
    ds = dataset()
    torch.manual_seed(5)
    m = make_model(cfg(loss), ds, None, 0)
    return train_and_evaluate(cfg(loss), ds, m, checkpoint_dir=tmp_path / "ckpt", tb_dir=None, oracle=None,
                              max_steps=max_steps)


def test_learns_a_planted_cycle(tmp_path):
    for loss in ("ce", "sampled"):
        res = run(tmp_path / loss, loss)
        assert res["metrics"]["test"]["hr@5"] > 0.6, (loss, res["metrics"]["test"])   # random: 0.25


def test_resume_gives_the_same_metrics(tmp_path):
    full = run(tmp_path / "a", "sampled")
    run(tmp_path / "b", "sampled", max_steps=7)                     # killed mid-epoch (4 steps per epoch)
    resumed = run(tmp_path / "b", "sampled")
    assert resumed["steps"] == full["steps"]
    assert resumed["metrics"] == full["metrics"]
