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
vectorised evaluation cache). :func:`candidate_set` builds a protocol's set the one way the training monitor,
tenrec_evaluate and ``recdag tenrec predict`` share.

**Prediction files** (:func:`write_predictions`; tenrec_evaluate's data/tenrec/predictions/test_<protocol>.parquet
and ``recdag tenrec predict``'s ``--out``): parquet, one row per valid (user, candidate) pair of a candidate
set, users in the set's order, candidates by slot:

* ``user`` / ``item`` (int64): the raw ids (the prepared data's ``user_id`` / ``items.parquet`` ``item_id``);
* ``slot`` (int32): the candidate's column in the set (sampled: 0 = the held-out click; retrieved: the ANN
  rank, 0 = nearest);
* ``label`` (int8): 1 = the held-out click (at most one per user; none where the retriever missed it);
  ``like`` (int8): 1 = the held-out click was liked;
* ``logit_click``, ``p_click``, ``logit_like``, ``p_like`` (float32): the two heads' logits and
  ``torch.sigmoid`` of them in float32, taken on the scoring batch (the very numbers the metrics are
  computed from; torch's vectorised sigmoid of the same logits laid out otherwise may differ by an ulp or
  two);
* ``p_true_click``, ``p_true_like`` (float32, synthetic data only): the world's p(click) and
  p(click)·p(like | click) (:func:`oracle_scores`).

The file's key-value metadata carries ``protocol`` (the set's name, e.g. ``sampled_128``).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch
import torch.nn.functional as F
from torch import nn

from pipeline.core.data import TensorData
from pipeline.core.errors import ConfigError, DataError
from pipeline.core.io import load_weights, read_json
from pipeline.core.seeding import rng, seed_everything
from pipeline.core.dist import gather_rows, my_shard
from pipeline.core.train import LoopState, Task
from pipeline.tenrec.fastformer import Encoder
from pipeline.tenrec.loop import best_valid, trainer as loop_trainer
from pipeline.tenrec.metrics import beside_oracle, protocol_metrics
from pipeline.tenrec.prepare import Sequences, Split, clicked_sets, histories

log = logging.getLogger(__name__)

USER, GENDER, AGE, TARGET, LIKE, HIST = 0, 1, 2, 3, 4, 5

# Ranker.config's keys and types: what train_ranking writes to config.json and load_ranker_dir rebuilds from.
RANKER_CONFIG = {"n_items": int, "n_categories": int, "encoder": str, "embedding_dim": int, "num_layers": int,
                 "num_heads": int, "ffn_dim": int, "dropout": float, "max_len": int}
ENCODERS = ("fastformer", "transformer")


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


PROTOCOLS = ("sampled", "retrieved")


def candidate_set(s: Sequences, split: Split, which: str, protocol: str, *, n_neg: int, n_users: int,
                  max_len: int, seed: int, candidates: np.ndarray | None = None) -> CandidateSet:
    """The candidate set of ``protocol`` (``sampled`` | ``retrieved``) on the ``which`` (``test`` | ``valid``)
    clicks of the evaluated users (:func:`eval_users` ``n_users``, seeded by ``which``): the one
    construction tenrec_evaluate and ``recdag tenrec predict`` share. ``retrieved`` re-ranks ``candidates``
    (the first ``rerank_k`` ANN candidates of every test query, :func:`load_candidates`); the index holds
    them for the test clicks only."""
    idx = eval_users(split, n_users, seed, which)
    if protocol == "sampled":
        return sampled_candidates(s, split, which, idx, n_neg, max_len, seed)
    if protocol != "retrieved":
        raise ConfigError(f"protocol '{protocol}' is not one of {', '.join(PROTOCOLS)}")
    if which != "test":
        raise ConfigError(f"protocol retrieved is defined on the test clicks only (the ANN candidates are the "
                          f"test queries'), not on '{which}'")
    if candidates is None:
        raise ConfigError("protocol retrieved needs the ANN candidates (build_index's candidates.npz)")
    return retrieved_candidates(s, split, idx, candidates, max_len)


@dataclass
class CandidateScores:
    """The ranker's outputs for every candidate of a set, [U, C] float32 each: the click and like heads'
    logits and ``torch.sigmoid`` of them (computed in float32, batch by batch, as the metrics use them)."""

    logit_click: np.ndarray
    logit_like: np.ndarray
    p_click: np.ndarray
    p_like: np.ndarray


@torch.no_grad()
def score_candidates(model: Ranker, cs: CandidateSet, batch_rows: int, lo: int = 0,
                     hi: int | None = None) -> CandidateScores:
    """Logits and probabilities [hi - lo, C] of the candidates of users ``lo:hi`` (all by default), in flat
    batches of ~``batch_rows`` (user, item) rows; eval mode for the pass, the model's mode restored after."""
    was = model.training
    model.eval()
    u, c = cs.items.shape
    hi = u if hi is None else hi
    out = CandidateScores(*(np.empty((hi - lo, c), np.float32) for _ in range(4)))
    per = max(1, batch_rows // c)
    for a in range(lo, hi, per):
        b = min(hi, a + per)
        x = cs.user_x[a:b].repeat_interleave(c, 0).clone()
        x[:, TARGET] = cs.items[a:b].reshape(-1).to(x.dtype)
        z = model(x).float()
        p = torch.sigmoid(z).view(b - a, c, 2).numpy()
        z = z.view(b - a, c, 2).numpy()
        r = slice(a - lo, b - lo)
        out.logit_click[r], out.logit_like[r] = z[..., 0], z[..., 1]
        out.p_click[r], out.p_like[r] = p[..., 0], p[..., 1]
    model.train(was)
    return out


def score_candidates_sharded(model: Ranker, cs: CandidateSet, batch_rows: int) -> CandidateScores:
    """:func:`score_candidates` of all users; under torchrun each rank scores its shard and every rank
    gets the gathered whole."""
    lo, hi = my_shard(cs.items.shape[0])
    part = score_candidates(model, cs, batch_rows, lo, hi)
    return CandidateScores(*(gather_rows(getattr(part, f)) for f in
                             ("logit_click", "logit_like", "p_click", "p_like")))


def oracle_scores(world, s: Sequences, cs: CandidateSet) -> tuple[np.ndarray, np.ndarray]:
    """The world's true p(click) and p(click)·p(like | click) for every candidate (float64; empty slots get
    an arbitrary valid item's, to be masked by ``cs.valid``)."""
    items = cs.items.numpy()
    raw_items = np.where(cs.valid, s.item_raw[items], s.item_raw[1])
    raw_users = np.broadcast_to(s.user_id[cs.users][:, None], items.shape)
    p_click, p_like = world.probabilities(raw_users, raw_items)
    return p_click, p_click * p_like


def candidate_metrics(sc: CandidateScores, cs: CandidateSet, k: int) -> dict:
    """:func:`~pipeline.tenrec.metrics.protocol_metrics` of the scores' probabilities on ``cs``."""
    return protocol_metrics(sc.p_click, sc.p_like, cs.positive, cs.liked, cs.valid, k)


def evaluate_candidates(model: Ranker, cs: CandidateSet, k: int, batch_rows: int) -> dict:
    return candidate_metrics(score_candidates_sharded(model, cs, batch_rows), cs, k)


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
    model.load_state_dict(load_weights(path))
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


@dataclass
class ScoredSet:
    """One protocol's candidate set with the ranker's scores and, on synthetic data, the oracle's
    (``p_true_click`` = p(click), ``p_true_like`` = p(click)·p(like | click), float64 [U, C])."""

    cs: CandidateSet
    scores: CandidateScores
    p_true_click: np.ndarray | None = None
    p_true_like: np.ndarray | None = None


def score_set(model: Ranker, s: Sequences, cs: CandidateSet, batch_rows: int, world=None) -> ScoredSet:
    """The ranker's scores of ``cs`` and, when ``world`` is given, the oracle's."""
    sc = score_candidates(model, cs, batch_rows)
    if world is None:
        return ScoredSet(cs, sc)
    return ScoredSet(cs, sc, *oracle_scores(world, s, cs))


def evaluate_protocols(model: Ranker, s: Sequences, split: Split, test_candidates: np.ndarray, rp, *, seed: int,
                       world=None) -> tuple[dict, list[ScoredSet]]:
    """Both protocols on the test clicks of the evaluated users: ``sampled_<1+n>`` (the held-out click among
    ``rp.sampled_negatives`` uniform non-clicked items) and ``retrieved_top_k`` (``test_candidates``), each
    the model's figures with the oracle's beside them on synthetic data. (metrics by protocol, the scored
    sets: the prediction files' content.) The click head's agreement with the oracle
    (:data:`AGREEMENT`) is added by the stage, which alone depends on pipeline/core/calibration.py."""
    protocols, runs = {}, []
    for protocol in PROTOCOLS:
        cs = candidate_set(s, split, "test", protocol, n_neg=rp.sampled_negatives, n_users=rp.eval_users,
                           max_len=rp.max_len, seed=seed, candidates=test_candidates)
        run = score_set(model, s, cs, rp.eval_batch_size, world)
        o = None
        if world is not None:
            o = protocol_metrics(run.p_true_click, run.p_true_like, cs.positive, cs.liked, cs.valid, rp.ndcg_k)
        protocols[cs.protocol] = beside_oracle(candidate_metrics(run.scores, cs, rp.ndcg_k), o,
                                               skip=("positive_in_candidates",))
        runs.append(run)
    return protocols, runs


# The click head's agreement with the oracle over a set's valid candidates, as
# pipeline.core.calibration.oracle_agreement names it (synthetic data only; model rows of evaluate.md).
AGREEMENT = ("pearson_logit_vs_oracle", "spearman_logit_vs_oracle", "kl_oracle_model")
CALIBRATION_NOTE = ("no ECE / calibration ratio for candidate sets: their label mix "
                    "(1 held-out click among sampled / retrieved candidates) is not the exposure distribution "
                    "the click head is trained on, so p_click is not expected to match their click rate")
AGREEMENT_NOTE = ("the click head's logits against logit(p_true_click) of the world over the valid candidates: "
                  "Pearson and Spearman correlations, and kl_oracle_model = mean KL(Bernoulli(p_true) || "
                  "Bernoulli(p_click)) in nats")


def evaluate_report(protocols: dict, sets: list[CandidateSet], rp, rerank_k: int, index: str, *, dataset: str,
                    synthetic: bool) -> dict:
    """reports/tenrec/evaluate.json."""
    sampled, retrieved = sets
    notes = {sampled.protocol: f"the held-out click among {rp.sampled_negatives} items drawn uniformly from "
                               "the items the user never clicked (comparable with the seed's / Tenrec's table)",
             retrieved.protocol: f"the first {rerank_k} candidates of the {index} index; a held-out "
                                 "click the retriever missed counts as a miss (0) on every ranking metric",
             "calibration": CALIBRATION_NOTE}
    if synthetic:
        notes["oracle agreement"] = AGREEMENT_NOTE
    return {"dataset": dataset, "synthetic": synthetic, "split": "test (each user's last click, leave-last-out)",
            "users": int(len(sampled)), "encoder": rp.encoder, "index": index, "protocol": list(protocols),
            "protocol_notes": notes, "metrics": protocols}


def evaluate_markdown(report: dict, k: int) -> str:
    """reports/tenrec/evaluate.md: one row per protocol and scorer (model, and oracle on synthetic data); on
    synthetic data the model rows also carry the click head's correlations with the oracle (n/a on the
    oracle's own rows)."""
    cols = ["auc", "like_auc", f"ndcg@{k}", "hr@1", "mrr"]
    agree = list(AGREEMENT[:2]) if report["synthetic"] else []
    lines = [f"# Tenrec ranking: {report['dataset']}, {report['encoder']} ranker, {report['index']} index",
             "", f"{report['users']} test users. " + " ".join(f"`{p}`: {n}." for p, n in report["protocol_notes"].items()),
             "", "| protocol | scorer | " + " | ".join(cols + agree) + " |",
             "|---|---|" + "---|" * len(cols + agree)]

    def f(v):
        return "n/a" if v is None else f"{v:.4f}"

    for proto, m in report["metrics"].items():
        lines.append(f"| {proto} | model | " + " | ".join(f(m.get(c)) for c in cols + agree) + " |")
        if report["synthetic"]:
            lines.append(f"| {proto} | oracle | " + " | ".join([f(m.get(f'oracle_{c}')) for c in cols]
                                                                + ["n/a"] * len(agree)) + " |")
    return "\n".join(lines) + "\n"


# ----------------------------------------------------------------------------------- prediction files
def prediction_schema(oracle: bool, protocol: str) -> pa.Schema:
    """The prediction file's columns (module docstring); ``protocol`` goes into its metadata."""
    f32 = pa.float32()
    fields = [pa.field("user", pa.int64()), pa.field("item", pa.int64()), pa.field("slot", pa.int32()),
              pa.field("label", pa.int8()), pa.field("like", pa.int8()), pa.field("logit_click", f32),
              pa.field("p_click", f32), pa.field("logit_like", f32), pa.field("p_like", f32)]
    if oracle:
        fields += [pa.field("p_true_click", f32), pa.field("p_true_like", f32)]
    return pa.schema(fields, metadata={"protocol": protocol})


def write_predictions(path, s: Sequences, run: ScoredSet, batch_rows: int = 1 << 20) -> int:
    """Write ``run``'s valid (user, candidate) pairs to the parquet ``path`` (module docstring), in batches
    of whole users (~``batch_rows`` rows each), so memory beyond the scores is one batch. Returns the rows
    written (= ``run.cs.valid.sum()``)."""
    cs, sc = run.cs, run.scores
    oracle = run.p_true_click is not None
    schema = prediction_schema(oracle, cs.protocol)
    items = cs.items.numpy()
    per = max(1, batch_rows // max(1, items.shape[1]))
    rows = 0
    with pq.ParquetWriter(Path(path), schema, compression="zstd") as w:
        for a in range(0, max(len(cs), 1), per):
            b = min(len(cs), a + per)
            r, c = np.nonzero(cs.valid[a:b])
            ra = r + a
            cols = [s.user_id[cs.users[ra]].astype(np.int64), s.item_raw[items[ra, c]].astype(np.int64),
                    c.astype(np.int32), cs.positive[ra, c].astype(np.int8), cs.liked[ra, c].astype(np.int8),
                    sc.logit_click[ra, c], sc.p_click[ra, c], sc.logit_like[ra, c], sc.p_like[ra, c]]
            if oracle:
                cols += [run.p_true_click[ra, c].astype(np.float32), run.p_true_like[ra, c].astype(np.float32)]
            w.write_batch(pa.record_batch([pa.array(x) for x in cols], schema=schema))
            rows += len(r)
    return rows


# ------------------------------------------------------------------------------- a trained model folder
def load_ranker_dir(model_dir, s: Sequences) -> Ranker:
    """The ranker of a train_ranking folder (``config.json`` = :attr:`Ranker.config`, ``model.pt`` = its
    state_dict, loaded with ``weights_only=True``), rebuilt from the folder's config, not from params, in
    eval mode. One-line :class:`DataError` when a file is missing, the config is not a ranker's, or its
    vocabulary (``n_items`` / ``n_categories``) is not the prepared data ``s``'s: item codes of other
    prepared data would index other embeddings, and scores would be silently wrong."""
    model_dir = Path(model_dir)
    cfg_file, weights = model_dir / "config.json", model_dir / "model.pt"
    made_by = "the output of tenrec_train_ranking (models/tenrec/ranking)"
    for f in (cfg_file, weights):
        if not f.is_file():
            raise DataError(f, "missing", expected=made_by)
    try:
        cfg = read_json(cfg_file)
    except ValueError as e:
        raise DataError(cfg_file, f"not JSON ({e})", expected=made_by) from None
    keys = set(RANKER_CONFIG)
    if not isinstance(cfg, dict) or set(cfg) != keys:
        got = sorted(cfg) if isinstance(cfg, dict) else type(cfg).__name__
        raise DataError(cfg_file, f"not a Tenrec ranker's config (keys {got})",
                        expected=f"the keys {sorted(keys)} of {made_by}")
    for key, kind in RANKER_CONFIG.items():
        v = cfg[key]
        if kind is int and (isinstance(v, bool) or not isinstance(v, int)) or kind is float and (
                isinstance(v, bool) or not isinstance(v, (int, float))) or kind is str and not isinstance(v, str):
            raise DataError(cfg_file, f"{v!r} is not a{'n' if kind is int else ''} {kind.__name__}", field=key,
                            expected=f"the config.json of {made_by}")
    if cfg["encoder"] not in ENCODERS:
        raise DataError(cfg_file, f"unknown encoder '{cfg['encoder']}'", field="encoder",
                        expected=" or ".join(ENCODERS))
    for key, have, what in (("n_items", s.n_items, "items"), ("n_categories", s.n_categories, "categories")):
        if cfg[key] != have:
            raise DataError(cfg_file, f"vocabulary mismatch: the model has {cfg[key]} {what}, the prepared data "
                            f"{have}", field=key, expected="the prepared data the model was trained on")
    try:
        model = Ranker(item_category=torch.from_numpy(s.item_category), **cfg)
        model.load_state_dict(load_weights(weights))
    except (RuntimeError, KeyError, ValueError, AssertionError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise DataError(weights, f"does not load into the ranker of {cfg_file.name} ({first})",
                        expected=f"the weights written with that config by {made_by}") from None
    if not np.array_equal(model.item_category.numpy(), s.item_category):
        raise DataError(weights, "vocabulary mismatch: the model's item -> category table differs from the "
                        "prepared data's", field="item_category", expected="the prepared data the model was trained on")
    return model.eval()

