"""The ranker: a Fastformer (or Transformer) over the user's recent clicks plus the target item, with two
heads, click and like, trained with weighted BCE through the one training loop.

Input tokens: position 0 is the target item, positions 1..L the user's most recent clicks, most recent
first (0 = padding, masked). A token is item-id + category + position embedding (LayerNorm, dropout). The
encoder output at the target position, the target's own embedding and the user's gender/age embeddings go
through a small MLP into the two logits.

Training rows (one ``TensorData``, columns ``[user, gender, age, target, like, hist_1..hist_L]``, y =
click): for each user, the last ``targets_per_user`` train clicks are positives (click 1, like = its like
flag), each with ``negatives_per_positive`` negatives (click 0, like 0) sharing its history, drawn from the
user's non-clicked exposures of the train period (``exposures``), uniformly from the catalogue minus the
user's clicks (``uniform``), or alternating (``mixed``). Loss = BCE(click) + like_weight · BCE(like,
pos_weight = like_pos_weight).

Evaluation works on a :class:`CandidateSet`: per user a fixed candidate matrix with the positive's column,
the like flags and the histories, built once as tensors and scored in flat batches every epoch (the
vectorised evaluation cache).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from pipeline.core.data import TensorData
from pipeline.core.errors import DataError
from pipeline.core.seeding import rng, seed_everything
from pipeline.core.train import LoopState, Task
from pipeline.tenrec.fastformer import Encoder
from pipeline.tenrec.loop import best_valid, trainer as loop_trainer
from pipeline.tenrec.metrics import beside_oracle, protocol_metrics
from pipeline.tenrec.prepare import Sequences, Split, clicked_sets, histories

log = logging.getLogger(__name__)

USER, GENDER, AGE, TARGET, LIKE, HIST = 0, 1, 2, 3, 4, 5


class Ranker(nn.Module):
    def __init__(self, n_items: int, n_categories: int, item_category: torch.Tensor, *, encoder: str,
                 embedding_dim: int, num_layers: int, num_heads: int, ffn_dim: int, dropout: float, max_len: int,
                 gradient_checkpointing: bool = False):
        super().__init__()
        d = embedding_dim
        self.config = {"n_items": n_items, "n_categories": n_categories, "encoder": encoder, "embedding_dim": d,
                       "num_layers": num_layers, "num_heads": num_heads, "ffn_dim": ffn_dim, "dropout": dropout,
                       "max_len": max_len}
        self.item_emb = nn.Embedding(n_items + 1, d, padding_idx=0)
        self.cat_emb = nn.Embedding(n_categories + 1, d)
        self.pos_emb = nn.Embedding(max_len + 1, d)
        self.gender_emb = nn.Embedding(3, d)
        self.age_emb = nn.Embedding(8, d)
        for e in (self.item_emb, self.cat_emb, self.pos_emb, self.gender_emb, self.age_emb):
            nn.init.normal_(e.weight, std=0.02)
        with torch.no_grad():
            self.item_emb.weight[0].zero_()
        self.in_ln = nn.LayerNorm(d)
        self.in_drop = nn.Dropout(dropout)
        self.encoder = Encoder(encoder, d, num_heads, ffn_dim, num_layers, dropout, gradient_checkpointing)
        self.head = nn.Sequential(nn.Linear(4 * d, 2 * d), nn.GELU(), nn.Dropout(dropout), nn.Linear(2 * d, 2))
        self.register_buffer("item_category", item_category.long(), persistent=True)
        self.max_len = max_len

    def embedding_parameters(self) -> list[torch.Tensor]:
        return [e.weight for e in (self.item_emb, self.cat_emb, self.pos_emb, self.gender_emb, self.age_emb)]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """[B, 2] logits (click, like)."""
        x = x.long()
        target = x[:, TARGET]
        seq = torch.cat([target.unsqueeze(1), x[:, HIST:HIST + self.max_len]], 1)     # [B, 1 + L]
        mask = seq > 0
        mask[:, 0] = True
        pos = torch.arange(seq.shape[1], device=x.device)
        tok = self.item_emb(seq) + self.cat_emb(self.item_category[seq]) + self.pos_emb(pos)[None]
        h = self.encoder(self.in_drop(self.in_ln(tok)), mask)
        z = torch.cat([h[:, 0], self.item_emb(target), self.gender_emb(x[:, GENDER]), self.age_emb(x[:, AGE])], -1)
        return self.head(z)


def ranking_loss(logits: torch.Tensor, click: torch.Tensor, like: torch.Tensor, like_weight: float,
                 like_pos_weight: float) -> torch.Tensor:
    lc = F.binary_cross_entropy_with_logits(logits[:, 0], click)
    ll = F.binary_cross_entropy_with_logits(logits[:, 1], like, pos_weight=torch.tensor(like_pos_weight))
    return lc + like_weight * ll


# ------------------------------------------------------------------------------------------ sampling
def sample_uniform_negatives(s: Sequences, users: np.ndarray, n: int, g: np.random.Generator,
                             exclude_upto: np.ndarray | None = None, max_rounds: int = 50) -> np.ndarray:
    """[len(users), n] items drawn uniformly from 1..n_items, distinct within a row and never one of the
    user's clicks (all of them, or those before ``exclude_upto``): rejection sampling, vectorised."""
    m = len(users)
    rows, items = clicked_sets(s, users, exclude_upto)
    big = np.int64(s.n_items + 1)
    clicked = np.unique(rows.astype(np.int64) * big + items)
    out = g.integers(1, s.n_items + 1, size=(m, n))
    for _ in range(max_rounds):
        keys = np.arange(m, dtype=np.int64)[:, None] * big + out
        bad = np.isin(keys, clicked)
        srt = np.sort(keys, 1)                                          # duplicates within the row
        dup_sorted = np.zeros_like(srt, bool)
        dup_sorted[:, 1:] = srt[:, 1:] == srt[:, :-1]
        if dup_sorted.any():
            order = np.argsort(keys, 1, kind="stable")
            dup = np.zeros_like(bad)
            np.put_along_axis(dup, order, dup_sorted, 1)
            bad |= dup
        if not bad.any():
            return out
        out[bad] = g.integers(1, s.n_items + 1, size=int(bad.sum()))
    raise RuntimeError("could not draw distinct negatives (catalogue too small for the requested count)")


def training_rows(s: Sequences, split: Split, rp, seed: int) -> TensorData:
    g = rng(seed, "tenrec", "ranking", "train_negatives")
    n_tr = split.n_train
    k = n_tr if rp.targets_per_user == 0 else np.minimum(n_tr, rp.targets_per_user)
    users = np.repeat(np.arange(s.n_users), k)
    within = np.arange(k.sum()) - np.repeat(np.r_[0, np.cumsum(k)[:-1]], k)
    t = np.repeat(n_tr - k, k) + within                                 # positions of the target clicks
    target = s.clicks[s.click_off[users] + t]
    like = s.likes[s.click_off[users] + t]
    hist = histories(s, users, t, rp.max_len)
    n_neg = rp.negatives_per_positive
    neg = np.zeros((len(users), n_neg), np.int64)
    if n_neg:
        uni = sample_uniform_negatives(s, users, n_neg, g)
        neg[:] = uni
        if rp.negative_source in ("exposures", "mixed"):
            cols = range(n_neg) if rp.negative_source == "exposures" else range(0, n_neg, 2)
            n_expo = np.diff(s.expo_off)[users]
            # exposures of the train period: shown before the user's valid click
            for j in cols:
                pick = (g.random(len(users)) * np.maximum(n_expo, 1)).astype(np.int64)
                item = s.exposures[np.minimum(s.expo_off[users] + pick, len(s.exposures) - 1)]
                before = s.expo_before[np.minimum(s.expo_off[users] + pick, len(s.expo_before) - 1)]
                ok = (n_expo > 0) & (before <= n_tr[users])
                neg[ok, j] = item[ok]
    rows = [np.concatenate([users[:, None], s.gender[users, None], s.age[users, None], target[:, None],
                            like[:, None], hist], 1)]
    ys = [np.ones(len(users), np.float32)]
    for j in range(n_neg):
        rows.append(np.concatenate([users[:, None], s.gender[users, None], s.age[users, None], neg[:, j:j + 1],
                                    np.zeros((len(users), 1), np.int64), hist], 1))
        ys.append(np.zeros(len(users), np.float32))
    x = np.concatenate(rows)
    return TensorData(torch.from_numpy(x.astype(np.int32)), torch.from_numpy(np.concatenate(ys)), None,
                      name="ranking/train")


# ------------------------------------------------------------------------------------- candidate sets
@dataclass
class CandidateSet:
    """The evaluation cache: built once, scored every epoch. Column ``pos_col`` of a row is its held-out
    item when ``has_pos``; ``valid`` marks real candidates (the ANN may return fewer than asked)."""

    protocol: str
    users: np.ndarray             # user codes
    user_x: torch.Tensor          # [U, HIST + L] packed user part (target/like columns zero)
    items: torch.Tensor           # [U, C] item codes (0 where not valid)
    valid: np.ndarray             # [U, C] bool
    positive: np.ndarray          # [U, C] bool
    liked: np.ndarray             # [U, C] bool

    def __len__(self) -> int:
        return len(self.users)


def _user_part(s: Sequences, users: np.ndarray, upto: np.ndarray, max_len: int) -> torch.Tensor:
    hist = histories(s, users, upto, max_len)
    z = np.zeros((len(users), 1), np.int64)
    x = np.concatenate([users[:, None], s.gender[users, None], s.age[users, None], z, z, hist], 1)
    return torch.from_numpy(x.astype(np.int32))


def eval_users(split: Split, n: int, seed: int, which: str) -> np.ndarray:
    """Indices into ``split.eval_users`` of the evaluated users (all, or a seeded subset of ``n``)."""
    m = len(split.eval_users)
    if n == 0 or n >= m:
        return np.arange(m)
    return np.sort(rng(seed, "tenrec", "eval_users", which).choice(m, size=n, replace=False))


def sampled_candidates(s: Sequences, split: Split, which: str, idx: np.ndarray, n_neg: int, max_len: int,
                       seed: int) -> CandidateSet:
    """Protocol ``sampled_<1+n_neg>``: column 0 the held-out click, then ``n_neg`` items drawn uniformly
    from the items the user never clicked (seeded, the same for every model and the oracle)."""
    users = split.eval_users[idx]
    upto = split.n_train[users] + (1 if which == "test" else 0)
    target = (split.test_item if which == "test" else split.valid_item)[idx]
    like = (split.test_like if which == "test" else split.valid_like)[idx]
    negs = sample_uniform_negatives(s, users, n_neg, rng(seed, "tenrec", "sampled_negatives", which))
    items = np.concatenate([target[:, None], negs], 1)
    positive = np.zeros(items.shape, bool)
    positive[:, 0] = True
    liked = positive & (like[:, None] == 1)
    return CandidateSet(f"sampled_{1 + n_neg}", users, _user_part(s, users, upto, max_len),
                        torch.from_numpy(items), np.ones(items.shape, bool), positive, liked)


def retrieved_candidates(s: Sequences, split: Split, idx: np.ndarray, candidates: np.ndarray, max_len: int
                         ) -> CandidateSet:
    """Protocol ``retrieved_top_k``: the ANN's candidates of the test queries (rows of ``split.eval_users``
    ``idx``), −1 = empty slot; the held-out click is a positive only where it was retrieved."""
    users = split.eval_users[idx]
    upto = split.n_train[users] + 1
    cand = candidates[idx]
    valid = cand > 0
    positive = valid & (cand == split.test_item[idx][:, None])
    liked = positive & (split.test_like[idx][:, None] == 1)
    return CandidateSet(f"retrieved_top_{cand.shape[1]}", users, _user_part(s, users, upto, max_len),
                        torch.from_numpy(np.where(valid, cand, 0)), valid, positive, liked)


@torch.no_grad()
def score_candidates(model: Ranker, cs: CandidateSet, batch_rows: int) -> tuple[np.ndarray, np.ndarray]:
    """(p_click, p_like) [U, C] for every candidate, in flat batches of ~``batch_rows`` (user, item) rows."""
    was = model.training
    model.eval()
    u, c = cs.items.shape
    click = np.empty((u, c), np.float32)
    like = np.empty((u, c), np.float32)
    per = max(1, batch_rows // c)
    for a in range(0, u, per):
        b = min(u, a + per)
        x = cs.user_x[a:b].repeat_interleave(c, 0).clone()
        x[:, TARGET] = cs.items[a:b].reshape(-1).to(x.dtype)
        p = torch.sigmoid(model(x).float()).view(b - a, c, 2).numpy()
        click[a:b], like[a:b] = p[..., 0], p[..., 1]
    model.train(was)
    return click, like


def oracle_scores(world, s: Sequences, cs: CandidateSet) -> tuple[np.ndarray, np.ndarray]:
    """The world's true p(click) and p(click)·p(like | click) for every candidate."""
    items = cs.items.numpy()
    raw_items = np.where(cs.valid, s.item_raw[items], s.item_raw[1])
    raw_users = np.broadcast_to(s.user_id[cs.users][:, None], items.shape)
    p_click, p_like = world.probabilities(raw_users, raw_items)
    return p_click, p_click * p_like


def evaluate_candidates(model: Ranker, cs: CandidateSet, k: int, batch_rows: int) -> dict:
    click, like = score_candidates(model, cs, batch_rows)
    return protocol_metrics(click, like, cs.positive, cs.liked, cs.valid, k)


class RankingTask(Task):
    """Weighted BCE on both heads; evaluation = the sampled protocol on the valid clicks; monitor ``ndcg@k``."""

    def __init__(self, like_weight: float, like_pos_weight: float, ndcg_k: int, eval_batch_rows: int):
        self.like_weight, self.like_pos_weight = like_weight, like_pos_weight
        self.k, self.batch_rows = ndcg_k, eval_batch_rows
        self.monitor = f"ndcg@{ndcg_k}"

    def loss(self, model, x, y):
        return ranking_loss(model(x), y, x[:, LIKE].float(), self.like_weight, self.like_pos_weight)

    def evaluate(self, trainer, data: CandidateSet) -> dict:
        m = evaluate_candidates(trainer.raw_model, data, self.k, self.batch_rows)
        return {k: v for k, v in m.items() if v is not None}


def build_ranker(s: Sequences, rp) -> Ranker:
    return Ranker(s.n_items, s.n_categories, torch.from_numpy(s.item_category), encoder=rp.encoder,
                  embedding_dim=rp.embedding_dim, num_layers=rp.num_layers, num_heads=rp.num_heads,
                  ffn_dim=rp.ffn_dim, dropout=rp.dropout, max_len=rp.max_len,
                  gradient_checkpointing=rp.gradient_checkpointing)


@dataclass
class RankingFit:
    """What :func:`fit_ranking` returns: the trained ranker (best checkpoint), the loop's final state and the
    valid candidate set it was monitored on."""

    model: Ranker
    state: LoopState
    valid: CandidateSet


def fit_ranking(s: Sequences, split: Split, rp, *, seed: int, checkpoint_dir, tb_dir, max_steps: int = 0
                ) -> RankingFit:
    """Build and train the ranker (the one loop, PlainAdam) on ``rp`` (the ``ranking`` section)."""
    seed_everything(seed)
    model = build_ranker(s, rp)
    train = training_rows(s, split, rp, seed)
    valid = sampled_candidates(s, split, "valid", eval_users(split, rp.eval_users, seed, "valid"),
                               rp.sampled_negatives, rp.max_len, seed)
    task = RankingTask(rp.like_weight, rp.like_pos_weight, rp.ndcg_k, rp.eval_batch_size)
    tr = loop_trainer(model, rp, task, seed=seed, checkpoint_dir=checkpoint_dir, tb_dir=tb_dir, max_steps=max_steps)
    log.info("ranking (%s): %d training rows, %d valid users x %d candidates", rp.encoder, len(train), len(valid),
             valid.items.shape[1])
    state = tr.fit(train, valid)
    return RankingFit(model, state, valid)


def ranking_train_report(fit: RankingFit, rp, *, dataset: str, synthetic: bool, wall_seconds: float) -> dict:
    """reports/tenrec/ranking_train.json."""
    return {"dataset": dataset, "synthetic": synthetic, "split": "valid (second-to-last click)",
            "protocol": fit.valid.protocol, "encoder": rp.encoder, "num_layers": rp.num_layers,
            "parameters": sum(x.numel() for x in fit.model.parameters()), "best_epoch": fit.state.best_epoch,
            "epochs_run": len(fit.state.history), "wall_seconds": round(wall_seconds, 1),
            "valid": best_valid(fit.state)}


def curve_keys(rp) -> tuple[str, ...]:
    """The columns of reports/tenrec/ranking_curve.json."""
    return ("epoch", "step", "train_loss", f"valid_ndcg@{rp.ndcg_k}", "valid_auc", "valid_like_auc", "lr")


# ------------------------------------------------------------------------------------------ evaluation
def load_ranker(s: Sequences, rp, path) -> Ranker:
    """The ranker of ``rp`` with train_ranking's weights (``model.pt``, a state_dict), in eval mode."""
    model = build_ranker(s, rp)
    model.load_state_dict(torch.load(path, weights_only=True, map_location="cpu"))
    return model.eval()


def load_candidates(path, split: Split, k: int) -> np.ndarray:
    """The first ``k`` ANN candidates of every test query (build_index's ``candidates.npz``); DataError when
    it was written for other prepared data."""
    with np.load(path) as z:
        if not np.array_equal(z["eval_users"], split.eval_users):
            raise DataError(path, "out of step with the prepared data (its evaluation users differ)",
                            expected="candidates built from the current data/tenrec/prepared: re-run "
                                     "tenrec_build_index")
        return z["test"][:, :k]


def evaluate_protocols(model: Ranker, s: Sequences, split: Split, test_candidates: np.ndarray, rp, *, seed: int,
                       world=None) -> tuple[dict, list[CandidateSet]]:
    """Both protocols on the test clicks of the evaluated users: ``sampled_<1+n>`` (the held-out click among
    ``rp.sampled_negatives`` uniform non-clicked items) and ``retrieved_top_k`` (``test_candidates``), each
    the model's figures with the oracle's beside them on synthetic data. (metrics by protocol, the sets)."""
    idx = eval_users(split, rp.eval_users, seed, "test")
    sets = [sampled_candidates(s, split, "test", idx, rp.sampled_negatives, rp.max_len, seed),
            retrieved_candidates(s, split, idx, test_candidates, rp.max_len)]
    protocols = {}
    for cs in sets:
        m = evaluate_candidates(model, cs, rp.ndcg_k, rp.eval_batch_size)
        o = None
        if world is not None:
            oc, ol = oracle_scores(world, s, cs)
            o = protocol_metrics(oc, ol, cs.positive, cs.liked, cs.valid, rp.ndcg_k)
        protocols[cs.protocol] = beside_oracle(m, o, skip=("positive_in_candidates",))
    return protocols, sets


def evaluate_report(protocols: dict, sets: list[CandidateSet], rp, rerank_k: int, index: str, *, dataset: str,
                    synthetic: bool) -> dict:
    """reports/tenrec/evaluate.json."""
    sampled, retrieved = sets
    return {"dataset": dataset, "synthetic": synthetic, "split": "test (each user's last click, leave-last-out)",
            "users": int(len(sampled)), "encoder": rp.encoder, "index": index, "protocol": list(protocols),
            "protocol_notes": {
                sampled.protocol: f"the held-out click among {rp.sampled_negatives} items drawn uniformly from "
                                  "the items the user never clicked (comparable with the seed's / Tenrec's table)",
                retrieved.protocol: f"the first {rerank_k} candidates of the {index} index; a held-out "
                                    "click the retriever missed counts as a miss (0) on every ranking metric"},
            "metrics": protocols}


def evaluate_markdown(report: dict, k: int) -> str:
    """reports/tenrec/evaluate.md: one row per protocol and scorer (model, and oracle on synthetic data)."""
    cols = ["auc", "like_auc", f"ndcg@{k}", "hr@1", "mrr"]
    lines = [f"# Tenrec ranking: {report['dataset']}, {report['encoder']} ranker, {report['index']} index",
             "", f"{report['users']} test users. " + " ".join(f"`{p}`: {n}." for p, n in report["protocol_notes"].items()),
             "", "| protocol | scorer | " + " | ".join(cols) + " |", "|---|---|" + "---|" * len(cols)]

    def f(v):
        return "n/a" if v is None else f"{v:.4f}"

    for proto, m in report["metrics"].items():
        lines.append(f"| {proto} | model | " + " | ".join(f(m.get(c)) for c in cols) + " |")
        if report["synthetic"]:
            lines.append(f"| {proto} | oracle | " + " | ".join(f(m.get(f'oracle_{c}')) for c in cols) + " |")
    return "\n".join(lines) + "\n"
