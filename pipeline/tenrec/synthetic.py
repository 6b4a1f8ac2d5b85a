"""The embedded Tenrec-like world: a seeded generator that writes QB-video.csv in Tenrec's exact format,
the true probabilities it drew each row's labels from (``<scenario>.oracle.parquet``) and its planted
factors (``world.npz``) so the oracle can score any user/item pair.

The world:

* items belong to one of ``categories`` categories (a ``missing_category`` share is written as ``\\N``);
  an item's factor is its category's centre plus item noise; items have a click bias and a Zipf exposure
  weight (a few items are shown very often);
* users have gender 0/1/2 and age 0..7 (0 = missing, ~10% each) that shift their factor, so
  demographics carry signal; the number of rows per user is log-normal (heavy tail, >= 8);
* exposures: each user is shown distinct items drawn by a logging policy that mixes popularity and
  relevance (Gumbel top-k over popularity-drawn candidates scored by the user's factor), in time order;
* p(click | u, i) = σ(b + signal · <U_u, V_i> + b_i), b solved for ``mean_ctr`` over the logged rows;
* p(like | click, u, i) = σ(b_l + signal · <U_u, W_i>) with W_i correlated with V_i, b_l solved for
  ``like_rate``; follow/share are rare and more likely on liked clicks; ``watching_times`` is 0 for an
  exposure and >= 1 for a click (it leaks the label, which is why gen_ctr drops it).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from pipeline.core.seeding import rng
from pipeline.tenrec.formats import COLUMNS, MISSING, ORACLE_COLUMNS, csv_name, oracle_name

log = logging.getLogger(__name__)

WORLD = "world.npz"


def _sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


def _solve_bias(z: np.ndarray, target: float) -> float:
    """b with mean σ(b + z) == target (bisection; the mean is monotone in b)."""
    lo, hi = -30.0, 30.0
    for _ in range(80):
        mid = (lo + hi) / 2
        if _sigmoid(mid + z).mean() < target:
            lo = mid
        else:
            hi = mid
    return (lo + hi) / 2


@dataclass
class World:
    user_ids: np.ndarray      # raw ids, sorted
    item_ids: np.ndarray      # raw ids, sorted
    U: np.ndarray             # [users, rank] (row order = user_ids)
    V: np.ndarray             # [items, rank] click factors (row order = item_ids)
    W: np.ndarray             # [items, rank] like factors
    b_item: np.ndarray
    exposure_weight: np.ndarray   # [items] the logging policy's popularity weight
    b_click: float
    b_like: float
    signal: float

    def save(self, path: Path) -> None:
        np.savez(path, user_ids=self.user_ids, item_ids=self.item_ids, U=self.U, V=self.V, W=self.W,
                 b_item=self.b_item, exposure_weight=self.exposure_weight, b_click=self.b_click, b_like=self.b_like, signal=self.signal)

    @classmethod
    def load(cls, path: str | Path) -> "World":
        with np.load(path) as z:
            return cls(z["user_ids"], z["item_ids"], z["U"], z["V"], z["W"], z["b_item"], z["exposure_weight"], float(z["b_click"]),
                       float(z["b_like"]), float(z["signal"]))

    def _rows(self, ids: np.ndarray, table: np.ndarray, what: str) -> np.ndarray:
        pos = np.searchsorted(table, ids)
        pos = np.clip(pos, 0, len(table) - 1)
        if not np.array_equal(table[pos], ids):
            raise KeyError(f"{what} id not in the world")
        return pos

    def click_logit_rows(self, u: np.ndarray, i: np.ndarray) -> np.ndarray:
        """Logits for world row indices (broadcasting: u [..], i [..])."""
        return self.b_click + self.signal * np.einsum("...r,...r->...", self.U[u], self.V[i]) + self.b_item[i]

    def probabilities(self, user_ids: np.ndarray, item_ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(p_click, p_like_given_click) for raw ids of the same shape (any pair, logged or not)."""
        u = self._rows(np.asarray(user_ids), self.user_ids, "user")
        i = self._rows(np.asarray(item_ids), self.item_ids, "item")
        p_click = _sigmoid(self.click_logit_rows(u, i))
        p_like = _sigmoid(self.b_like + self.signal * np.einsum("...r,...r->...", self.U[u], self.W[i]))
        return p_click, p_like


def load_world(raw_dir: str | Path) -> World | None:
    """The world (planted factors) written beside the raw log in ``raw_dir`` when that log is synthetic;
    None for real data (no oracle)."""
    path = Path(raw_dir) / WORLD
    return World.load(path) if path.is_file() else None


def generate(out_dir: str | Path, *, users: int, items: int, rows: int, categories: int, rank: int,
             mean_ctr: float, like_rate: float, missing_category: float, signal: float, seed: int,
             scenario: str = "QB-video", chunk_users: int = 2000) -> dict:
    """Write ``<scenario>.csv``, ``<scenario>.oracle.parquet`` and ``world.npz`` into ``out_dir``."""
    out_dir = Path(out_dir)
    g = rng(seed, "tenrec", "world")
    scale = 1.0 / np.sqrt(rank)
    # items
    cat_weights = 1.0 / np.arange(1, categories + 1) ** 0.7
    item_cat = g.choice(categories, size=items, p=cat_weights / cat_weights.sum())
    cat_centre = g.normal(0, 1.0, (categories, rank))
    V = (cat_centre[item_cat] + 0.7 * g.normal(0, 1.0, (items, rank))) * scale
    W = 0.6 * V + 0.8 * g.normal(0, 1.0, (items, rank)) * scale
    b_item = g.normal(0, 0.5, items)
    pop = 1.0 / (g.permutation(items) + 10.0) ** 0.8                        # Zipf-like exposure weight
    pop /= pop.sum()
    cat_missing = g.random(items) < missing_category
    item_ids = np.sort(g.choice(np.arange(items * 3), size=items, replace=False))  # sparse raw ids
    # users
    gender = g.choice(3, size=users, p=[0.1, 0.45, 0.45])
    age = np.where(g.random(users) < 0.1, 0, g.integers(1, 8, users))
    shift_g = g.normal(0, 0.5, (3, rank))
    shift_a = g.normal(0, 0.5, (8, rank))
    shift_g[0] = 0
    shift_a[0] = 0
    U = (g.normal(0, 1.0, (users, rank)) + shift_g[gender] + shift_a[age]) * 1.2
    user_ids = np.arange(users, dtype=np.int64)
    n_rows = np.maximum(8, g.lognormal(0.0, 0.8, users))
    n_rows = np.maximum(8, np.round(n_rows / n_rows.sum() * rows)).astype(np.int64)
    n_rows = np.minimum(n_rows, items // 4)

    # exposures: Gumbel top-k of relevance over popularity-drawn candidates (distinct items per user)
    seq_users, seq_items = [], []
    for a in range(0, users, chunk_users):
        b = min(users, a + chunk_users)
        k = n_rows[a:b]
        m = int(min(items, 4 * k.max()))
        cand = g.choice(items, size=(b - a, m), p=pop)
        score = np.einsum("ur,umr->um", U[a:b], V[cand]) * signal + g.gumbel(size=(b - a, m))
        order = np.argsort(cand, axis=1, kind="stable")
        sc = np.take_along_axis(cand, order, 1)
        dup = np.zeros_like(sc, dtype=bool)
        dup[:, 1:] = sc[:, 1:] == sc[:, :-1]
        dup_orig = np.zeros_like(dup)
        np.put_along_axis(dup_orig, order, dup, 1)
        score[dup_orig] = -np.inf
        top = np.argsort(-score, axis=1, kind="stable")
        for r in range(b - a):
            chosen = cand[r, top[r, :k[r]]]
            chosen = chosen[np.isfinite(score[r, top[r, :k[r]]])]
            g.shuffle(chosen)                                              # time order within the user
            seq_users.append(np.full(len(chosen), a + r, dtype=np.int64))
            seq_items.append(chosen)
    uu = np.concatenate(seq_users)
    ii = np.concatenate(seq_items)
    z = signal * np.einsum("nr,nr->n", U[uu], V[ii]) + b_item[ii]
    b_click = _solve_bias(z, mean_ctr)
    p_click = _sigmoid(b_click + z)
    click = (g.random(len(uu)) < p_click).astype(np.int64)
    zl = signal * np.einsum("nr,nr->n", U[uu], W[ii])
    b_like = _solve_bias(zl[click == 1], like_rate) if click.any() else 0.0
    p_like = _sigmoid(b_like + zl)
    like = click * (g.random(len(uu)) < p_like)
    follow = click * (g.random(len(uu)) < 0.004 + 0.05 * like)
    share = click * (g.random(len(uu)) < 0.002 + 0.03 * like)
    watching = click * (1 + g.poisson(0.5 + 2.0 * p_like))
    cat_col = np.where(cat_missing[ii], MISSING, item_cat[ii].astype(str)).astype(object)

    table = pa.table({
        "user_id": user_ids[uu], "item_id": item_ids[ii], "click": click, "follow": follow.astype(np.int64),
        "like": like.astype(np.int64), "share": share.astype(np.int64), "video_category": pa.array(cat_col, pa.string()),
        "watching_times": watching.astype(np.int64), "gender": gender[uu], "age": age[uu]})
    assert table.column_names == COLUMNS
    out_dir.mkdir(parents=True, exist_ok=True)
    with open(out_dir / csv_name(scenario), "wb") as f:          # Tenrec's header is unquoted
        f.write((",".join(COLUMNS) + "\n").encode())
        pacsv.write_csv(table, f, pacsv.WriteOptions(include_header=False, quoting_style="none",
                                                     batch_size=1 << 16))
    pq.write_table(pa.table({ORACLE_COLUMNS[0]: p_click.astype(np.float32),
                             ORACLE_COLUMNS[1]: p_like.astype(np.float32)}),
                   out_dir / oracle_name(scenario), row_group_size=1 << 18)
    World(user_ids, item_ids, U, V, W, b_item, pop, b_click, b_like, signal).save(out_dir / WORLD)
    stats = {"rows": int(len(uu)), "users": int(users), "items_shown": int(len(np.unique(ii))), "items": int(items),
             "clicks": int(click.sum()), "likes": int(like.sum()), "ctr": float(click.mean()),
             "like_rate_given_click": float(like.sum() / max(click.sum(), 1)),
             "missing_category_items": int(cat_missing.sum())}
    log.info("synthetic Tenrec world: %s", stats)
    return stats
