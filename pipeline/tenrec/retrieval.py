"""Two-tower retrieval trained with sampled softmax (logQ correction, accidental-hit masking).

* **User tower**: user-id embedding ⊕ mean-pooled embeddings of the user's most recent clicks (the item
  tower's id table, shared) ⊕ gender ⊕ age → MLP → L2-normalised vector.
* **Item tower**: item-id embedding ⊕ category embedding → MLP → L2-normalised vector.
* **Loss**: sampled softmax over the positive and ``num_negatives`` items shared by the batch, drawn from
  q = uniform or ∝ count^α over train clicks. Logits are cosine / temperature; with ``logq_correction``
  every logit (positive and sampled) has log q(item) subtracted (Yi et al., RecSys 2019; TF's
  ``sampled_softmax_loss(subtract_log_q=True)``), which makes the sampled softmax an estimate of the full
  softmax instead of a popularity-debiased one; with ``mask_accidental_hits`` a sampled negative equal to
  the row's positive gets logit −inf (TF's ``remove_accidental_hits``).

A batch row of the training data packs ``[user, gender, age, target, hist_1..hist_H]`` (history most recent
first, 0-padded) into the int columns the shared loop's ``TensorData`` carries.

Evaluation is exact: the held-out item's rank among every item (the user's earlier clicks excluded) under
the one tie rule of :mod:`pipeline.core.ranking` (an item scoring the same as the target counts against
it), reported as ``recall@k``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from pipeline.core.data import TensorData
from pipeline.core.ranking import MISSED, rank_from_counts, rank_metrics
from pipeline.core.seeding import rng, seed_everything
from pipeline.core.dist import gather_rows, my_shard
from pipeline.core.train import LoopState, Task
from pipeline.tenrec.loop import best_valid, trainer as loop_trainer
from pipeline.tenrec.metrics import beside_oracle
from pipeline.tenrec.prepare import Sequences, Split, clicked_sets, histories

log = logging.getLogger(__name__)

USER, GENDER, AGE, TARGET, HIST = 0, 1, 2, 3, 4        # column layout of x
EXACT_KS = (10, 50, 100, 200)


def _mlp(dims: list[int]) -> nn.Sequential:
    layers: list[nn.Module] = []
    for a, b in zip(dims[:-2], dims[1:-1]):
        layers += [nn.Linear(a, b), nn.ReLU()]
    layers.append(nn.Linear(dims[-2], dims[-1]))
    return nn.Sequential(*layers)


class TwoTower(nn.Module):
    def __init__(self, n_users: int, n_items: int, n_categories: int, embedding_dim: int,
                 hidden_units: list[int], item_category: torch.Tensor):
        super().__init__()
        d = embedding_dim
        self.config = {"n_users": n_users, "n_items": n_items, "n_categories": n_categories,
                       "embedding_dim": d, "hidden_units": list(hidden_units)}
        self.user_emb = nn.Embedding(n_users, d)
        self.item_emb = nn.Embedding(n_items + 1, d, padding_idx=0)
        self.cat_emb = nn.Embedding(n_categories + 1, d)
        self.gender_emb = nn.Embedding(3, d)
        self.age_emb = nn.Embedding(8, d)
        for e in (self.user_emb, self.item_emb, self.cat_emb, self.gender_emb, self.age_emb):
            nn.init.normal_(e.weight, std=0.05)
        with torch.no_grad():
            self.item_emb.weight[0].zero_()
        self.user_mlp = _mlp([4 * d, *hidden_units, d])
        self.item_mlp = _mlp([2 * d, *hidden_units, d])
        self.register_buffer("item_category", item_category.long(), persistent=True)

    def embedding_parameters(self) -> list[torch.Tensor]:
        return [e.weight for e in (self.user_emb, self.item_emb, self.cat_emb, self.gender_emb, self.age_emb)]

    def forward(self, x: torch.Tensor, items: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(user vectors of ``x``, item vectors of ``items``): the training step's one call, so that under
        torchrun it goes through DistributedDataParallel's forward (which arms the gradient all-reduce)."""
        return self.user_vec(x), self.item_vec(items)

    def user_vec(self, x: torch.Tensor) -> torch.Tensor:
        x = x.long()
        hist = x[:, HIST:]
        mask = (hist > 0).unsqueeze(-1).float()
        pooled = (self.item_emb(hist) * mask).sum(1) / mask.sum(1).clamp(min=1.0)
        h = torch.cat([self.user_emb(x[:, USER]), pooled, self.gender_emb(x[:, GENDER]), self.age_emb(x[:, AGE])], -1)
        return F.normalize(self.user_mlp(h), dim=-1)

    def item_vec(self, items: torch.Tensor) -> torch.Tensor:
        items = items.long()
        h = torch.cat([self.item_emb(items), self.cat_emb(self.item_category[items])], -1)
        return F.normalize(self.item_mlp(h), dim=-1)

    @torch.no_grad()
    def all_item_vecs(self, batch: int = 65536) -> torch.Tensor:
        """[n_items + 1, d]; row 0 (padding) is zero."""
        n = self.item_category.shape[0]
        out = torch.cat([self.item_vec(torch.arange(a, min(n, a + batch))) for a in range(0, n, batch)])
        out[0] = 0
        return out


class NegativeSampler:
    """Shared negatives for a batch: q = uniform over items, or ∝ (train clicks + 1)^alpha. Draws use the
    torch global generator, whose state the training loop checkpoints (so resume is exact)."""

    def __init__(self, n_items: int, counts: np.ndarray | None, kind: str, alpha: float):
        if kind == "uniform":
            q = np.ones(n_items, np.float64)
        else:
            q = (np.asarray(counts[1:n_items + 1], np.float64) + 1.0) ** alpha
        q = q / q.sum()
        self.q = torch.zeros(n_items + 1, dtype=torch.float64)
        self.q[1:] = torch.from_numpy(q)
        self.log_q = torch.log(self.q.clamp(min=1e-300)).float()
        self.kind = kind

    def sample(self, k: int) -> torch.Tensor:
        return torch.multinomial(self.q, k, replacement=True)


def sampled_softmax_logits(u: torch.Tensor, pos: torch.Tensor, neg: torch.Tensor, target: torch.Tensor,
                           neg_ids: torch.Tensor, *, temperature: float, log_q: torch.Tensor | None,
                           mask_accidental_hits: bool) -> torch.Tensor:
    """[B, 1 + K] logits, column 0 the positive. ``log_q`` (per item id) enables the logQ correction."""
    pos_logit = (u * pos).sum(-1, keepdim=True) / temperature
    neg_logit = u @ neg.T / temperature
    if log_q is not None:
        pos_logit = pos_logit - log_q[target].unsqueeze(1)
        neg_logit = neg_logit - log_q[neg_ids].unsqueeze(0)
    if mask_accidental_hits:
        neg_logit = neg_logit.masked_fill(neg_ids.unsqueeze(0) == target.unsqueeze(1), float("-inf"))
    return torch.cat([pos_logit, neg_logit], 1)


def sampled_softmax_loss(logits: torch.Tensor) -> torch.Tensor:
    return F.cross_entropy(logits, torch.zeros(len(logits), dtype=torch.long))


# ------------------------------------------------------------------------------------------------ data
def training_rows(s: Sequences, split: Split, history_len: int) -> TensorData:
    """One row per train click (target = that click, history = the clicks before it)."""
    users = np.repeat(np.arange(s.n_users), split.n_train)
    pos = np.arange(len(users)) - np.repeat(np.r_[0, np.cumsum(split.n_train)[:-1]], split.n_train)
    target = s.clicks[s.click_off[users] + pos]
    hist = histories(s, users, pos, history_len)
    x = np.concatenate([users[:, None], s.gender[users, None], s.age[users, None], target[:, None], hist], 1)
    return TensorData(torch.from_numpy(x.astype(np.int32)), torch.ones(len(x)), None, name="retrieval/train")


@dataclass
class QuerySet:
    """Evaluation queries built once: packed user features, the held-out item and the items to exclude."""

    name: str
    users: np.ndarray            # user codes
    x: torch.Tensor              # [U, 4 + H] packed like training rows (target column = held-out item)
    target: np.ndarray
    mask_rows: np.ndarray        # (row, item) pairs excluded from retrieval (the user's earlier clicks)
    mask_items: np.ndarray

    def __len__(self) -> int:
        return len(self.users)


def query_set(s: Sequences, split: Split, which: str, history_len: int, exclude_history: bool,
              idx: np.ndarray | None = None) -> QuerySet:
    """``valid``: history = train clicks, target = second-to-last click; ``test``: history also includes the
    valid click, target = last click. ``idx`` selects rows of ``split.eval_users`` (default: all)."""
    idx = np.arange(len(split.eval_users)) if idx is None else idx
    users = split.eval_users[idx]
    upto = split.n_train[users] + (1 if which == "test" else 0)
    target = (split.test_item if which == "test" else split.valid_item)[idx]
    hist = histories(s, users, upto, history_len)
    x = np.concatenate([users[:, None], s.gender[users, None], s.age[users, None], target[:, None], hist], 1)
    rows, items = clicked_sets(s, users, upto) if exclude_history else (np.zeros(0, int), np.zeros(0, int))
    return QuerySet(which, users, torch.from_numpy(x.astype(np.int32)), target, rows, items)


@torch.no_grad()
def user_vectors(model: TwoTower, q: QuerySet, batch: int, lo: int = 0, hi: int | None = None) -> torch.Tensor:
    """User vectors of the queries ``lo:hi`` (all by default)."""
    hi = len(q) if hi is None else hi
    return torch.cat([model.user_vec(q.x[a:min(hi, a + batch)]) for a in range(lo, hi, batch)]
                     or [torch.zeros(0, model.config["embedding_dim"])])


@torch.no_grad()
def catalogue_ranks(scores_fn, q: QuerySet, n: int, batch: int = 2048, start: int = 0) -> np.ndarray:
    """0-based rank of each query's held-out item among all items (padding and excluded items removed),
    from ``scores_fn(a, b) -> [b - a, n_items + 1]``, under the one tie rule (pipeline.core.ranking): items
    scoring strictly higher plus the other items scoring the same. A held-out item that is itself excluded
    (a re-click of an earlier click) cannot be retrieved: -1 (missed). A streaming count, cheaper than a
    top-k. ``start``: rank only the queries ``start:n`` (one rank's shard under torchrun)."""
    ranks = np.empty(n - start, np.int64)
    order = np.argsort(q.mask_rows, kind="stable")
    rows, items = q.mask_rows[order], q.mask_items[order]
    tgt = torch.from_numpy(q.target)
    for a in range(start, n, batch):
        b = min(n, a + batch)
        scores = scores_fn(a, b)
        scores[:, 0] = float("-inf")
        lo, hi = np.searchsorted(rows, [a, b])
        if hi > lo:
            scores[torch.from_numpy(rows[lo:hi] - a), torch.from_numpy(items[lo:hi])] = float("-inf")
        t = scores.gather(1, tgt[a:b, None])
        r = rank_from_counts((scores > t).sum(1).numpy(), (scores == t).sum(1).numpy() - 1)
        ranks[a - start:b - start] = np.where(torch.isneginf(t[:, 0]).numpy(), MISSED, r)
    return ranks


class RetrievalTask(Task):
    """Sampled-softmax loss; evaluation = exact ``recall@k`` of the valid click over the whole catalogue;
    monitor ``recall@<monitor_k>``."""

    def __init__(self, sampler: NegativeSampler, *, num_negatives: int, temperature: float, logq: bool,
                 mask_hits: bool, monitor_k: int, eval_batch: int):
        self.sampler, self.k, self.tau = sampler, num_negatives, temperature
        self.logq, self.mask_hits, self.eval_batch = logq, mask_hits, eval_batch
        self.ks = tuple(sorted(set(EXACT_KS) | {monitor_k}))
        self.monitor = f"recall@{monitor_k}"

    def loss(self, model, x, y):
        target = x[:, TARGET].long()
        neg_ids = self.sampler.sample(self.k)          # every rank draws the same K (same seed, same steps)
        u, items = model(x, torch.cat([target, neg_ids]))
        logits = sampled_softmax_logits(u, items[:len(target)], items[len(target):], target, neg_ids,
                                        temperature=self.tau, log_q=self.sampler.log_q if self.logq else None,
                                        mask_accidental_hits=self.mask_hits)
        return sampled_softmax_loss(logits)

    def evaluate(self, trainer, data: QuerySet) -> dict:
        """Under torchrun each rank ranks its contiguous shard of the queries; the ranks are gathered."""
        m = trainer.raw_model
        lo, hi = my_shard(len(data))
        uv = user_vectors(m, data, self.eval_batch, lo, hi)
        iv = m.all_item_vecs()
        ranks = gather_rows(catalogue_ranks(lambda a, b: uv[a - lo:b - lo] @ iv.T, data, hi, start=lo))
        return rank_metrics(ranks, recall=self.ks)


def oracle_ranks(world, s: Sequences, q: QuerySet) -> np.ndarray:
    """Rank of the held-out click under the world's next-click propensity (same exclusions as the model).

    The log shows item i to user u with a propensity that grows with its popularity weight and
    exp(signal·<U_u, V_i>) (the logging policy), and u clicks it with p(click | u, i); the oracle scores
    log(exposure weight) + signal·<U_u, V_i> + log p(click | u, i). Ranking by p(click) alone would ignore
    that the next click has to be shown first, and is not what a retriever is asked to predict.
    """
    item_rows = np.full(s.n_items + 1, 0, np.int64)
    valid = s.item_raw >= 0
    item_rows[valid] = np.searchsorted(world.item_ids, s.item_raw[valid])
    user_rows = np.searchsorted(world.user_ids, s.user_id[q.users])
    V = torch.from_numpy(world.V[item_rows]).float()
    b = torch.from_numpy(world.b_item[item_rows]).float()
    logpop = torch.from_numpy(np.log(world.exposure_weight[item_rows])).float()
    U = torch.from_numpy(world.U[user_rows]).float()

    def scores(a, e):
        dot = world.signal * (U[a:e] @ V.T)
        return logpop + dot + F.logsigmoid(world.b_click + dot + b)

    return catalogue_ranks(scores, q, len(q))


@dataclass
class RetrievalFit:
    """What :func:`fit_retrieval` returns: the trained towers (best checkpoint), the loop's final state and
    the valid (monitor subset) / test query sets."""

    model: TwoTower
    state: LoopState
    valid: QuerySet
    test: QuerySet


def fit_retrieval(s: Sequences, split: Split, rp, *, seed: int, checkpoint_dir, tb_dir,
                  max_steps: int = 0) -> RetrievalFit:
    """Build and train the two towers (the one loop, PlainAdam) on ``rp`` (the ``retrieval`` section)."""
    seed_everything(seed)
    model = TwoTower(s.n_users, s.n_items, s.n_categories, rp.embedding_dim, rp.hidden_units,
                     torch.from_numpy(s.item_category))
    train = training_rows(s, split, rp.history_len)
    m = len(split.eval_users)
    sub = (np.arange(m) if rp.eval_users == 0 or rp.eval_users >= m else
           np.sort(rng(seed, "tenrec", "retrieval_eval_users").choice(m, rp.eval_users, replace=False)))
    valid = query_set(s, split, "valid", rp.history_len, rp.exclude_history, sub)
    test = query_set(s, split, "test", rp.history_len, rp.exclude_history)
    sampler = NegativeSampler(s.n_items, s.item_train_clicks, rp.sampler, rp.alpha)
    task = RetrievalTask(sampler, num_negatives=rp.num_negatives, temperature=rp.temperature,
                         logq=rp.logq_correction, mask_hits=rp.mask_accidental_hits, monitor_k=rp.monitor_k,
                         eval_batch=rp.eval_batch_size)
    tr = loop_trainer(model, rp, task, seed=seed, checkpoint_dir=checkpoint_dir, tb_dir=tb_dir, max_steps=max_steps)
    log.info("retrieval: %d training rows, %d valid users (monitor), %d test users, %d items", len(train), len(valid),
             len(test), s.n_items)
    state = tr.fit(train, valid)
    return RetrievalFit(model, state, valid, test)


@torch.no_grad()
def evaluate_test(fit: RetrievalFit, s: Sequences, world, eval_batch: int) -> tuple[dict, torch.Tensor, torch.Tensor]:
    """(exact ``recall@k`` of the test clicks over the whole catalogue for k in :data:`EXACT_KS`, with the
    oracle's beside it when ``world`` is the synthetic world; item vectors; test query vectors)."""
    model = fit.model.eval()
    items = model.all_item_vecs()
    tq = user_vectors(model, fit.test, eval_batch)
    m = rank_metrics(catalogue_ranks(lambda a, b: tq[a:b] @ items.T, fit.test, len(fit.test)), recall=EXACT_KS)
    o = None if world is None else rank_metrics(oracle_ranks(world, s, fit.test), recall=EXACT_KS)
    return beside_oracle(m, o), items, tq


def retrieval_report(fit: RetrievalFit, s: Sequences, split: Split, rp, test_metrics: dict, *, dataset: str,
                     synthetic: bool, wall_seconds: float) -> dict:
    """reports/tenrec/retrieval.json."""
    return {"dataset": dataset, "synthetic": synthetic,
            "split": "leave-last-out: valid = second-to-last click, test = last click",
            "protocol": "full_ranking (exact search over every item, the user's earlier clicks excluded)",
            "users": len(fit.test), "items": s.n_items, "train_rows": int(split.n_train.sum()),
            "sampler": rp.sampler, "num_negatives": rp.num_negatives, "logq_correction": rp.logq_correction,
            "best_epoch": fit.state.best_epoch, "epochs_run": len(fit.state.history),
            "wall_seconds": round(wall_seconds, 1),
            "metrics": {"test": test_metrics, f"valid ({len(fit.valid)} users)": best_valid(fit.state)}}


def curve_keys(rp) -> tuple[str, ...]:
    """The columns of reports/tenrec/retrieval_curve.json (the monitored valid recall)."""
    return ("epoch", "step", "train_loss", f"valid_recall@{rp.monitor_k}", "lr")
