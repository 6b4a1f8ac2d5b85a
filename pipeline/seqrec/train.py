"""Training and evaluation of the sequential models through the one training loop (pipeline.core.train).

The step rule is :class:`pipeline.core.optim.OneCycleAdam` (Adam, weight decay as L2, grad-norm clipping,
one-cycle schedule per step; its step counter is in ``state_dict`` so a resumed run continues the schedule).

* :class:`SeqRecTask`: the loss of a batch of packed sequences (``x`` = [b, max_len + 1] left-padded item
  ids; inputs x[:, :-1], targets x[:, 1:], every position with a history and a target is trained, in one
  causal pass; the batch's sequences are packed several to a row first, :func:`pack_rows`) and the
  evaluation of a leave-one-out split.

Losses
------
* ``sampled`` (the seed's pretraining loss): InfoNCE over the positive and ``num_negatives`` negatives
  drawn from the popularity distribution q(i) ∝ count(i)^alpha, shared by every position of the batch. All
  items needed (positives ∪ negatives, deduplicated) are embedded in **one batched pass** of the item
  encoder; logQ correction subtracts log q(i) from every logit (positive included: Jean et al. / Yi et al.);
  negatives equal to the position's positive ("accidental hits") are masked out.
* ``ce``: full softmax over the catalogue (RecBole's SASRec ``loss_type: CE``).

Evaluation
----------
Leave-one-out per user: train = items[:-2], valid target items[-2], test target items[-1]; ``train``
predicts the last training item from the ones before it. Protocols:
``full_ranking`` (the target against every catalogue item; with ``mask_history`` the user's earlier items
are not ranked, as in RecBole's full sort) and ``sampled_<K>`` (the target against K items drawn uniformly
without replacement among those the user has not interacted with; seeded per split). Ranks and metrics are
:mod:`pipeline.core.ranking`'s (ties count against the model: rank = candidates scoring strictly higher
plus the other candidates scoring the same; NDCG@k = 1/log2(rank + 2) if rank < k, HR@k = 1(rank < k)).
On synthetic data the planted next-item distribution (:class:`Oracle`) is ranked by the
same protocol and reported as ``oracle_*``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F

from pipeline.core.data import TensorData
from pipeline.core.dist import gather_rows, my_shard, rank_world
from pipeline.core.ranking import rank_metrics, target_ranks
from pipeline.core.seeding import rng
from pipeline.core.train import Task

log = logging.getLogger(__name__)

KS = (5, 10, 20)


# ------------------------------------------------------------------------------------------------ data


def pack_sequences(seqs: list[np.ndarray], max_len: int) -> TensorData:
    """Training rows: each sequence as windows of max_len + 1 items (the last window right-aligned, earlier
    items in further windows of the same width, so long histories are not thrown away), left-padded with 0.
    ``y`` holds the row's sequence index (unused by the loss)."""
    width = max_len + 1
    rows, owner = [], []
    for k, s in enumerate(seqs):
        if len(s) < 2:
            continue
        end = len(s)
        while end > 1:
            w = s[max(0, end - width):end]
            row = np.zeros(width, dtype=np.int32)
            row[width - len(w):] = w
            rows.append(row)
            owner.append(k)
            end -= max_len                                # windows overlap by one item (input of the next)
    x = torch.from_numpy(np.stack(rows)) if rows else torch.zeros((0, width), dtype=torch.int32)
    return TensorData(x, torch.tensor(owner, dtype=torch.float32), None, name="train")


def pack_rows(inp: torch.Tensor, *aligned: torch.Tensor):
    """Pack left-padded rows [b, w] into fewer rows of the same width, several sequences a row (first-fit
    decreasing by length), so that the model does not compute padding. ``aligned`` tensors [b, w] (e.g. the
    targets) are moved the same way. Returns (packed inp, packed aligned..., segments [r, w] with sequence
    k's tokens marked k + 1 and padding 0, last [b, 2]: row and column of each sequence's last token)."""
    b, w = inp.shape
    lens = (inp != 0).sum(1).numpy()
    row_of = np.zeros(b, dtype=np.int64)
    off = np.zeros(b, dtype=np.int64)
    fill: list[int] = []
    for i in np.argsort(-lens, kind="stable"):
        n = int(lens[i])
        for r, f in enumerate(fill):
            if f + n <= w:
                break
        else:
            r = len(fill)
            fill.append(0)
        row_of[i], off[i] = r, fill[r]
        fill[r] += n
    src = np.repeat(np.arange(b), lens)                         # token -> its sequence
    starts = np.cumsum(lens) - lens
    j = np.arange(len(src)) - np.repeat(starts, lens)           # index within the sequence
    src_col = torch.from_numpy(w - lens[src] + j)
    dst_r, dst_c = torch.from_numpy(row_of[src]), torch.from_numpy(off[src] + j)
    src_t = torch.from_numpy(src)
    rows = max(1, len(fill))
    out = []
    for t in (inp, *aligned):
        p = torch.zeros((rows, w), dtype=t.dtype)
        p[dst_r, dst_c] = t[src_t, src_col]
        out.append(p)
    seg = torch.zeros((rows, w), dtype=torch.int64)
    seg[dst_r, dst_c] = src_t + 1
    last = torch.from_numpy(np.stack([row_of, off + lens - 1], 1))
    return (*out, seg, last)


def last_hidden(model, hist: torch.Tensor) -> torch.Tensor:
    """The model's hidden state after each left-padded history [b, n] (packed: no padding computed)."""
    if len(hist) and int((hist != 0).sum(1).min()) == 0:
        raise ValueError("last_hidden: a history without items")
    p, seg, last = pack_rows(hist.long())
    return model(p, seg)[last[:, 0], last[:, 1]]


@dataclass
class EvalSet:
    """Leave-one-out evaluation rows: the history (left-padded to max_len), the target, the user index and
    the full history (for masking and the oracle)."""

    name: str
    hist: torch.Tensor               # [m, max_len] int64
    target: np.ndarray               # [m]
    users: np.ndarray                # [m] user index (oracle)
    full_hist: list[np.ndarray]

    def __len__(self) -> int:
        return len(self.target)


def eval_split(seqs: list[np.ndarray], split: str, max_len: int, users: np.ndarray | None = None,
               limit: int = 0, seed: int = 0) -> EvalSet:
    """``split``: train (target = items[-3]), valid (items[-2]) or test (items[-1]). ``limit`` > 0 keeps a
    seeded random subset of that many users."""
    cut = {"train": 3, "valid": 2, "test": 1}[split]
    idx = [k for k, s in enumerate(seqs) if len(s) >= cut + 1]
    if limit and len(idx) > limit:
        idx = sorted(rng(seed, "amazon", "eval-users", split).choice(idx, size=limit, replace=False).tolist())
    hist = np.zeros((len(idx), max_len), dtype=np.int64)
    target = np.zeros(len(idx), dtype=np.int64)
    full = []
    for r, k in enumerate(idx):
        s = seqs[k]
        h = s[:len(s) - cut]
        w = h[-max_len:]
        hist[r, max_len - len(w):] = w
        target[r] = s[len(s) - cut]
        full.append(np.asarray(h, dtype=np.int64))
    u = np.asarray(idx) if users is None else users[np.asarray(idx, dtype=np.int64)]
    return EvalSet(split, torch.from_numpy(hist), target, u, full)


def split_metrics(ranks: np.ndarray, prefix: str = "") -> dict:
    """NDCG@k and HR@k for k in :data:`KS` (pipeline.core.ranking), keys in the order ndcg@5, hr@5, ndcg@10, ..."""
    out = {}
    for k in KS:
        out.update(rank_metrics(ranks, ndcg=(k,), hr=(k,), prefix=prefix))
    return out


def sample_negatives(g: np.random.Generator, num_items: int, k: int, exclude: np.ndarray) -> np.ndarray:
    """k distinct items from 1..num_items not in ``exclude``, uniformly (fewer if the catalogue is small)."""
    excl = np.unique(exclude)
    avail = num_items - len(excl[(excl >= 1) & (excl <= num_items)])
    if avail <= k:
        return np.setdiff1d(np.arange(1, num_items + 1), excl)
    if k > num_items // 4:                                # dense: a permutation of the allowed items
        allowed = np.setdiff1d(np.arange(1, num_items + 1), excl)
        return g.choice(allowed, size=k, replace=False)
    out = np.zeros(0, dtype=np.int64)
    while len(out) < k:                                   # sparse: rejection sampling
        draw = g.integers(1, num_items + 1, size=2 * (k - len(out)) + 16)
        draw = draw[~np.isin(draw, excl)]
        out = np.concatenate([out, draw])
        _, first = np.unique(out, return_index=True)
        out = out[np.sort(first)]
    return out[:k]


# ------------------------------------------------------------------------------------------------ the task


class SeqRecTask(Task):
    """``negatives``: ``shared`` (recdag: one draw of ``num_negatives`` for the whole batch) or ``per_row``
    (the srt release, ``nce_global_negatives: false``: ``num_negatives`` drawn for every position).
    ``smoothing``: added to every item's count before q is formed (the release counts every item once more:
    ``Counter({i: 1 for i in items})``). ``penalty``: a callable(model) added to every batch loss (EWC).
    ``keep``: ``best`` (the loop's early stopping and best reload on ``monitor``) or ``last`` (the release's
    fine-tuning stages, ``saved=False``: no early stopping, the last epoch is kept; the monitored figure is
    then the step counter, which always improves, and ``monitor`` is still logged)."""

    def __init__(self, *, loss: str, num_items: int, num_negatives: int = 0, popularity: np.ndarray | None = None,
                 neg_alpha: float = 1.0, logq: bool = True, protocol: str = "full_ranking",
                 eval_negatives: int = 0, mask_history: bool = True, monitor: str = "ndcg@10",
                 oracle=None, seed: int = 0, eval_batch: int = 256, pack: bool = True,
                 negatives: str = "shared", smoothing: float = 0.0, penalty=None, keep: str = "best"):
        if loss not in ("ce", "sampled"):
            raise ValueError(f"loss: {loss}")
        if negatives not in ("shared", "per_row") or keep not in ("best", "last"):
            raise ValueError(f"negatives: {negatives}, keep: {keep}")
        self.loss_name, self.num_items, self.num_negatives = loss, num_items, num_negatives
        self.logq, self.protocol, self.eval_negatives = logq, protocol, eval_negatives
        self.mask_history, self.oracle, self.seed = mask_history, oracle, seed
        self.eval_batch, self.pack = eval_batch, pack       # pack=False: one sequence a row (benchmark)
        self.negatives, self.penalty, self.keep, self.metric = negatives, penalty, keep, monitor
        self.monitor = "step" if keep == "last" else monitor
        if loss == "sampled":
            counts = np.asarray(popularity, dtype=np.float64)[1:num_items + 1] + smoothing
            q = np.maximum(counts, 0.0) ** neg_alpha
            q = q / q.sum()
            self.q = torch.from_numpy(np.concatenate([[0.0], q])).float()       # index 0 = padding, never drawn
            self.log_q = torch.log(self.q.clamp_min(1e-30))

    # -------------------------------------------------------------- loss
    @staticmethod
    def positions(x: torch.Tensor):
        inp, tgt = x[:, :-1].long(), x[:, 1:].long()
        return inp, tgt, (tgt != 0) & (inp != 0)

    def draw_negatives(self, device=None, rows: int = 0) -> torch.Tensor:
        """[K] shared negatives, or [rows, K] (one draw per row) when ``rows`` > 0."""
        if rows:
            return torch.multinomial(self.q, rows * self.num_negatives, replacement=True).view(rows, -1).to(device)
        return torch.multinomial(self.q, self.num_negatives, replacement=True).to(device)

    def loss(self, model, x, y):
        out = self._loss(model, x, y)
        _, world = rank_world()
        if world > 1:
            # a rank's loss is the mean over its own positions, and DDP averages the ranks' gradients: weigh
            # each rank by its share of the global batch's positions, so the step is the one-process step
            # (the mean over every position of the global batch), whatever the ranks' position counts
            n = torch.tensor([float(self._positions)], device=out.device)
            total = n.clone()
            dist.all_reduce(total)
            out = out * (n * world / total.clamp_min(1.0))[0]
        if self.penalty is not None:
            out = out + self.penalty(getattr(model, "module", model))
        return out

    def _loss(self, model, x, y):
        inp, tgt, mask = self.positions(x)
        if self.pack:
            inp, tgt, seg, _ = pack_rows(inp, tgt)                # several sequences a row, no padding
            mask = (tgt != 0) & (inp != 0)
            h = model(inp, seg)[mask]                             # [m, d]
        else:
            h = model(inp)[mask]
        pos = tgt[mask]
        self._positions = len(pos)
        if self.loss_name == "ce":
            raw = getattr(model, "module", model)
            logits = h @ raw.all_item_vectors().T
            logits[:, 0] = float("-inf")
            return F.cross_entropy(logits, pos)
        rows = len(pos) if self.negatives == "per_row" else 0
        return self.sampled_loss(getattr(model, "module", model), h, pos, self.draw_negatives(h.device, rows))

    def sampled_loss(self, model, h: torch.Tensor, pos: torch.Tensor, neg: torch.Tensor) -> torch.Tensor:
        """InfoNCE with shared negatives [K] or per-row negatives [m, K]; every needed item vector from one
        batched encoder pass."""
        uniq, inv = torch.unique(torch.cat([pos, neg.reshape(-1)]), return_inverse=True)
        vec = model.item_vectors(uniq)                            # the one pass
        pos_v = vec[inv[:len(pos)]]
        if neg.dim() == 1:
            s_neg = h @ vec[inv[len(pos):]].T
        elif len(uniq) <= 64 * neg.shape[1]:                      # one GEMM over the distinct items, then gather:
                                                                  # 2x faster than gathering [m, K, d] (12k items)
            s_neg = (h @ vec.T).gather(1, inv[len(pos):].view(neg.shape))
        else:
            s_neg = torch.einsum("md,mkd->mk", h, vec[inv[len(pos):].view(neg.shape)])
        return self.infonce(h, pos, neg, (h * pos_v).sum(-1), s_neg)

    def infonce(self, h, pos, neg, s_pos: torch.Tensor, s_neg: torch.Tensor) -> torch.Tensor:
        neg2 = neg if neg.dim() == 2 else neg.unsqueeze(0)        # [m or 1, K]
        if self.logq:
            s_pos = s_pos - self.log_q.to(h.device)[pos]
            s_neg = s_neg - self.log_q.to(h.device)[neg2]
        s_neg = s_neg.masked_fill(neg2 == pos.unsqueeze(1), float("-inf"))                # accidental hits
        logits = torch.cat([s_pos.unsqueeze(1), s_neg], 1)
        return F.cross_entropy(logits, torch.zeros(len(pos), dtype=torch.long, device=h.device))

    def sampled_loss_loop(self, model, h, pos, neg) -> torch.Tensor:
        """Reference: the same loss with every negative embedded by its own encoder call (for tests and the
        benchmark)."""
        s_pos = (h * model.item_vectors(pos)).sum(-1)
        s_neg = torch.stack([h @ model.item_vectors(neg[j:j + 1]).squeeze(0) for j in range(len(neg))], 1)
        return self.infonce(h, pos, neg, s_pos, s_neg)

    # -------------------------------------------------------------- evaluation
    def evaluate(self, trainer, data: EvalSet) -> dict:
        out = self.evaluate_model(trainer.raw_model, data)
        if self.keep == "last":
            out["step"] = float(trainer.state.global_step)
        return out

    @torch.no_grad()
    def evaluate_model(self, model, data: EvalSet, with_oracle: bool = False) -> dict:
        was = model.training
        model.eval()
        try:
            return self._evaluate(model, data, with_oracle)
        finally:
            model.train(was)

    def _candidates(self, data: EvalSet) -> np.ndarray:
        """Per row: candidate item ids (target first, 0-padded on a catalogue too small for the protocol) for
        the sampled protocol, seeded per split; drawn once per eval set and reused at every evaluation."""
        cached = getattr(data, "_candidates", None)
        if cached is not None:
            return cached
        g = rng(self.seed, "amazon", "eval-negatives", data.name, self.protocol)
        rows = [np.concatenate([[t], sample_negatives(g, self.num_items, self.eval_negatives,
                                                      np.concatenate([h, [t]]))])
                for t, h in zip(data.target, data.full_hist)]
        width = max((len(r) for r in rows), default=1)
        data._candidates = np.stack([np.pad(r, (0, width - len(r))) for r in rows]) if rows else np.zeros((0, 1), np.int64)
        return data._candidates

    def _evaluate(self, model, data: EvalSet, with_oracle: bool) -> dict:
        """Under torchrun each rank ranks a contiguous shard of the users; the ranks are gathered."""
        vecs = model.all_item_vectors()                            # [N + 1, d]
        ranks, oranks = [], []
        sampled = self.protocol != "full_ranking"
        cands = self._candidates(data) if sampled else None
        lo, hi = my_shard(len(data))
        for i in range(lo, hi, self.eval_batch):
            sl = slice(i, min(hi, i + self.eval_batch))
            h = last_hidden(model, data.hist[sl]) if self.pack else model(data.hist[sl])[:, -1]   # [b, d]
            if sampled:                                            # score the catalogue, keep the candidates
                c = cands[sl]
                scores = np.take_along_axis((h @ vecs.T).numpy(), c, axis=1)
                scores[c == 0] = -np.inf                           # padding (tiny catalogue only)
                ranks.append(target_ranks(scores, np.zeros(len(c), dtype=np.int64)))
            else:
                scores = (h @ vecs.T).numpy()
                scores[:, 0] = -np.inf
                if self.mask_history:
                    for r, hist in enumerate(data.full_hist[sl]):
                        keep = hist[hist != data.target[i + r]]
                        scores[r, keep] = -np.inf
                ranks.append(target_ranks(scores, data.target[sl]))
            if with_oracle and self.oracle is not None:
                oranks.append(self._oracle_ranks(data, sl, cands[sl] if sampled else None))
        none = np.zeros(0, dtype=np.int64)
        out = split_metrics(gather_rows(np.concatenate(ranks) if ranks else none))
        out["users"] = len(data)
        if sampled:
            out["min_candidates"] = int((cands != 0).sum(1).min()) if len(cands) else 0
        if with_oracle and self.oracle is not None and len(data):
            out.update(split_metrics(gather_rows(np.concatenate(oranks) if oranks else none), prefix="oracle_"))
        return out

    def _oracle_ranks(self, data: EvalSet, sl: slice, cands) -> np.ndarray:
        """The oracle's ranks of the batch's targets, by the same protocol and tie rule as the model's."""
        o = self.oracle
        rows = []
        all_items = np.arange(1, self.num_items + 1)
        for r, (u, hist, t) in enumerate(zip(data.users[sl], data.full_hist[sl], data.target[sl])):
            if cands is not None:
                s = o.scores(int(u), hist, np.maximum(cands[r], 1))
                s[cands[r] == 0] = -np.inf
            else:
                s = o.scores(int(u), hist, all_items)
                if self.mask_history:
                    keep = hist[hist != t]
                    s[keep - 1] = -np.inf
            rows.append(s)
        if not rows:
            return np.zeros(0, dtype=np.int64)
        col = np.zeros(len(rows), dtype=np.int64) if cands is not None else data.target[sl] - 1
        return target_ranks(np.stack(rows), col)
