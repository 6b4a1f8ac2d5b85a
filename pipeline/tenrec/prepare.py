"""``prepare``: one streaming pass over a Tenrec video log, whole users at a time, writing two views.

(a) **The CTR view**, following Tenrec's official ``gen_ctr.py``: per user, ``hist_1..hist_H`` (H =
``tenrec.history_len``, Tenrec's 10) are the user's first H clicks; a user with H or fewer clicks gets all
but the last one (so at least one click stays a positive row), right-padded with 0. Every row whose item
is in that history is dropped (the history clicks themselves and any exposure of those items); the same
history is attached to the user's remaining rows. ``watching_times`` is not carried over: it is > 0 exactly
on clicks and would leak the label.

(b) **The sequence view** for retrieval and ranking: per user, the chronological clicks (with their like
flags) and the non-clicked exposures (with the number of clicks that preceded each, so a consumer can keep
only the exposures before a cut). Leave-last-out (:func:`split_users`): a user with at least
``tenrec.min_clicks`` clicks has the last click as test, the second-to-last as valid and the rest as train;
a user with fewer is train-only.

Ids are encoded: users 0..n-1 in order of appearance, items 1..n (0 is padding) and categories 1..n (0 =
``\\N``) in order of first appearance; ``items.parquet`` and the ``user_id`` column map them back to the
raw ids. Memory: one chunk of whole users plus the id maps (bounded by the distinct users/items, not the
rows), so the real ctr_data_1M (120M rows) streams through.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from tqdm import tqdm

from pipeline.core.errors import DataError
from pipeline.core.io import read_table
from pipeline.tenrec.formats import UserChunker, iter_log

log = logging.getLogger(__name__)

CTR_FILE, SEQ_FILE, ITEMS_FILE = "ctr.parquet", "sequences.parquet", "items.parquet"


class _IdMap:
    """raw id -> dense code (order of first appearance), vectorised per chunk."""

    def __init__(self, start: int):
        self.start = start
        self.index = pd.Index(np.array([], dtype=np.int64))

    def encode(self, raw: np.ndarray) -> np.ndarray:
        codes = self.index.get_indexer(raw)
        if (codes < 0).any():
            new = pd.unique(raw[codes < 0])
            self.index = self.index.append(pd.Index(new))
            codes = self.index.get_indexer(raw)
        return codes + self.start

    def __len__(self) -> int:
        return len(self.index)


def gen_ctr_chunk(user: np.ndarray, item: np.ndarray, click: np.ndarray, history_len: int):
    """gen_ctr.py on a chunk of whole, contiguous users.

    Returns (keep mask over rows, hist [users_in_chunk, H], user_local per row, starts, n_clicks).
    """
    n = len(user)
    starts = np.flatnonzero(np.r_[True, user[1:] != user[:-1]])
    user_local = np.cumsum(np.r_[False, user[1:] != user[:-1]]) if n else np.zeros(0, np.int64)
    csum = np.cumsum(click)
    before = csum - click                                           # clicks before each row (global)
    c_before = before - before[starts][user_local]                 # ... within the user
    n_clicks = np.add.reduceat(click, starts) if n else np.zeros(0, np.int64)
    k = np.clip(np.minimum(history_len, n_clicks - 1), 0, None)    # first H clicks, or all but the last
    hist = np.zeros((len(starts), history_len), dtype=np.int64)
    in_h = (click == 1) & (c_before < k[user_local])
    hist[user_local[in_h], c_before[in_h]] = item[in_h]
    # rows whose item is in the user's history are dropped
    big = np.int64(item.max() + 1 if n else 1)
    hist_keys = (np.nonzero(hist)[0].astype(np.int64) * big + hist[hist != 0])
    row_keys = user_local.astype(np.int64) * big + item
    keep = ~np.isin(row_keys, hist_keys)
    return keep, hist, user_local, starts, n_clicks, c_before


@dataclass
class PrepareStats:
    rows: int = 0
    users: int = 0
    clicks: int = 0
    likes: int = 0
    ctr_rows: int = 0
    ctr_clicks: int = 0
    ctr_likes: int = 0
    dropped_in_history: int = 0
    eval_users: int = 0
    train_clicks: int = 0
    users_without_clicks: int = 0


def prepare(log_path: Path, out_dir: Path, *, batch_rows: int, history_len: int, min_clicks: int,
            oracle_path: Path | None = None) -> dict:
    """Stream ``log_path`` into ``out_dir/{ctr,sequences,items}.parquet``; returns the stats."""
    users, items, cats = _IdMap(0), _IdMap(1), _IdMap(1)
    item_cat: list[np.ndarray] = []                 # category code per new item, in code order
    train_count = np.zeros(0, np.int64)
    expo_count = np.zeros(0, np.int64)
    st = PrepareStats()
    ctr_writer = seq_writer = None
    ys, ps = [], []
    chunker = UserChunker(log_path, batch_rows)
    bar = tqdm(desc="prepare", unit=" rows", unit_scale=True, disable=None)
    try:
        for b in chunker.chunks(iter_log(log_path, batch_rows, oracle_path)):
            c = b.cols
            n_known = len(items)
            item = items.encode(c["item_id"])
            if len(items) > n_known:                 # categories of newly seen items (first appearance)
                cat_raw = c["video_category"]
                cat_code = np.zeros(len(cat_raw), np.int64)
                valid = cat_raw >= 0
                if valid.any():
                    cat_code[valid] = cats.encode(cat_raw[valid])
                uniq, first = np.unique(item, return_index=True)      # first row of each item
                item_cat.append(cat_code[first[uniq > n_known]])      # new codes, ascending
            user = users.encode(c["user_id"])
            click, like = c["click"], c["like"]
            keep, hist, ul, starts, n_clicks, c_before = gen_ctr_chunk(user, item, click, history_len)
            # (a) the CTR view
            cols = {"user": user[keep].astype(np.int32), "item": item[keep].astype(np.int32),
                    "click": click[keep].astype(np.int8), "like": like[keep].astype(np.int8),
                    "follow": c["follow"][keep].astype(np.int8), "share": c["share"][keep].astype(np.int8),
                    "category": np.asarray(_cat_of(item[keep], item_cat), np.int32),
                    "gender": c["gender"][keep].astype(np.int8), "age": c["age"][keep].astype(np.int8)}
            hk = hist[ul[keep]]
            for j in range(history_len):
                cols[f"hist_{j + 1}"] = hk[:, j].astype(np.int32)
            if b.oracle is not None:
                cols["p_click"] = b.oracle["p_click"][keep].astype(np.float32)
                cols["p_like_given_click"] = b.oracle["p_like_given_click"][keep].astype(np.float32)
                ys.append(cols["click"])
                ps.append(cols["p_click"])
            t = pa.table(cols)
            ctr_writer = ctr_writer or pq.ParquetWriter(out_dir / CTR_FILE, t.schema)
            ctr_writer.write_table(t)
            # (b) the sequence view
            nu = len(starts)
            is_click = click == 1
            click_off = np.r_[0, np.cumsum(n_clicks)].astype(np.int32)
            n_expo = np.bincount(ul[~is_click], minlength=nu)
            expo_off = np.r_[0, np.cumsum(n_expo)].astype(np.int32)
            seq = pa.table({
                "user": user[starts].astype(np.int32), "user_id": c["user_id"][starts],
                "gender": c["gender"][starts].astype(np.int8), "age": c["age"][starts].astype(np.int8),
                "clicks": pa.ListArray.from_arrays(click_off, item[is_click].astype(np.int32)),
                "likes": pa.ListArray.from_arrays(click_off, like[is_click].astype(np.int8)),
                "exposures": pa.ListArray.from_arrays(expo_off, item[~is_click].astype(np.int32)),
                "exposure_clicks_before": pa.ListArray.from_arrays(expo_off, c_before[~is_click].astype(np.int32)),
            })
            seq_writer = seq_writer or pq.ParquetWriter(out_dir / SEQ_FILE, seq.schema)
            seq_writer.write_table(seq)
            # popularity over the train part only (valid/test clicks excluded: no leakage into the sampler)
            evalu = n_clicks >= min_clicks
            n_train = np.where(evalu, n_clicks - 2, n_clicks)
            train_mask = is_click & (c_before < n_train[ul])
            size = len(items) + 1
            train_count = _grow(train_count, size) + np.bincount(item[train_mask], minlength=size)
            expo_count = _grow(expo_count, size) + np.bincount(item, minlength=size)
            st.rows += len(b)
            st.users += nu
            st.clicks += int(n_clicks.sum())
            st.likes += int(like.sum())
            st.ctr_rows += int(keep.sum())
            st.ctr_clicks += int(click[keep].sum())
            st.ctr_likes += int(like[keep].sum())
            st.dropped_in_history += int((~keep).sum())
            st.eval_users += int(evalu.sum())
            st.train_clicks += int(train_mask.sum())
            st.users_without_clicks += int((n_clicks == 0).sum())
            bar.update(len(b))
    finally:
        bar.close()
        for w in (ctr_writer, seq_writer):
            if w is not None:
                w.close()
    cat_codes = np.concatenate(item_cat) if item_cat else np.zeros(0, np.int64)
    pq.write_table(pa.table({
        "item": np.arange(1, len(items) + 1, dtype=np.int32),
        "item_id": items.index.to_numpy(np.int64),
        "category": cat_codes.astype(np.int32),
        "train_clicks": train_count[1:len(items) + 1].astype(np.int64),
        "rows": expo_count[1:len(items) + 1].astype(np.int64)}), out_dir / ITEMS_FILE)
    stats = {**st.__dict__, "items": len(items), "categories": len(cats), "history_len": history_len,
             "min_clicks": min_clicks, "synthetic": oracle_path is not None,
             "category_ids": cats.index.to_numpy(np.int64).tolist()}
    if ys:
        from sklearn.metrics import log_loss, roc_auc_score
        y, p = np.concatenate(ys), np.clip(np.concatenate(ps).astype(np.float64), 1e-7, 1 - 1e-7)
        stats.update(oracle_ctr_view_auc=float(roc_auc_score(y, p)),
                     oracle_ctr_view_logloss=float(log_loss(y, p, labels=[0, 1])))
    return stats


def _grow(a: np.ndarray, size: int) -> np.ndarray:
    return a if len(a) >= size else np.r_[a, np.zeros(size - len(a), a.dtype)]


def _cat_of(item: np.ndarray, item_cat: list[np.ndarray]) -> np.ndarray:
    table = np.r_[0, np.concatenate(item_cat)] if item_cat else np.zeros(1, np.int64)
    return table[item]


# ---------------------------------------------------------------------------------------------- reading
@dataclass
class Sequences:
    """The sequence view in memory (ragged arrays as offsets + values, no per-user Python objects)."""

    user_id: np.ndarray          # raw ids, by user code
    gender: np.ndarray
    age: np.ndarray
    click_off: np.ndarray        # [users + 1]
    clicks: np.ndarray           # item codes
    likes: np.ndarray
    expo_off: np.ndarray
    exposures: np.ndarray
    expo_before: np.ndarray
    n_items: int
    item_category: np.ndarray    # [n_items + 1], 0 for padding / missing
    item_train_clicks: np.ndarray  # [n_items + 1]
    item_raw: np.ndarray         # [n_items + 1] raw item ids (index 0 unused)

    @property
    def n_users(self) -> int:
        return len(self.user_id)

    @property
    def n_clicks(self) -> np.ndarray:
        return np.diff(self.click_off)

    @property
    def n_categories(self) -> int:
        return int(self.item_category.max()) if len(self.item_category) else 0


SEQ_COLUMNS = ["user", "user_id", "gender", "age", "clicks", "likes", "exposures", "exposure_clicks_before"]
ITEM_COLUMNS = ["item", "item_id", "category", "train_clicks"]
PREPARED_EXPECTED = "the output of tenrec_prepare (run `dvc repro tenrec_prepare`)"


def load_sequences(prepared: Path) -> Sequences:
    """The sequence view and the item table written by :func:`prepare`; a missing, truncated or inconsistent
    file is a DataError naming it."""
    seq_path, items_path = Path(prepared) / SEQ_FILE, Path(prepared) / ITEMS_FILE
    t = read_table(seq_path, SEQ_COLUMNS, expected=PREPARED_EXPECTED)
    order = np.argsort(t.column("user").to_numpy())
    if not np.array_equal(t.column("user").to_numpy()[order], np.arange(t.num_rows)):
        raise DataError(seq_path, "user codes are not 0..n-1", field="user", expected=PREPARED_EXPECTED)
    t = t.take(pa.array(order))

    def ragged(name):
        col = t.column(name).combine_chunks()
        return col.offsets.to_numpy().astype(np.int64), col.values.to_numpy()

    click_off, clicks = ragged("clicks")
    _, likes = ragged("likes")
    expo_off, exposures = ragged("exposures")
    _, before = ragged("exposure_clicks_before")
    it = read_table(items_path, ITEM_COLUMNS, expected=PREPARED_EXPECTED)
    n_items = it.num_rows
    codes = it.column("item").to_numpy()
    if not np.array_equal(np.sort(codes), np.arange(1, n_items + 1)):
        raise DataError(items_path, "item codes are not 1..n", field="item", expected=PREPARED_EXPECTED)
    for name, values in (("clicks", clicks), ("exposures", exposures)):
        if len(values) and (values.min() < 1 or values.max() > n_items):
            raise DataError(seq_path, f"item codes outside 1..{n_items} (the items in {ITEMS_FILE})", field=name,
                            expected=PREPARED_EXPECTED)
    cat = np.zeros(n_items + 1, np.int64)
    cat[it.column("item").to_numpy()] = it.column("category").to_numpy()
    cnt = np.zeros(n_items + 1, np.int64)
    cnt[it.column("item").to_numpy()] = it.column("train_clicks").to_numpy()
    raw = np.full(n_items + 1, -1, np.int64)
    raw[it.column("item").to_numpy()] = it.column("item_id").to_numpy()
    return Sequences(t.column("user_id").to_numpy(), t.column("gender").to_numpy().astype(np.int64),
                     t.column("age").to_numpy().astype(np.int64), click_off, clicks.astype(np.int64),
                     likes.astype(np.int64), expo_off, exposures.astype(np.int64), before.astype(np.int64),
                     n_items, cat, cnt, raw)


@dataclass
class Split:
    """Leave-last-out: for eval users (>= min_clicks clicks) test = last click, valid = second-to-last."""

    n_train: np.ndarray          # [users] clicks in the train part
    eval_users: np.ndarray       # user codes with a valid and a test click
    valid_item: np.ndarray       # [len(eval_users)]
    test_item: np.ndarray
    test_like: np.ndarray
    valid_like: np.ndarray


def split_users(s: Sequences, min_clicks: int) -> Split:
    n = s.n_clicks
    ev = n >= min_clicks
    n_train = np.where(ev, n - 2, n)
    users = np.flatnonzero(ev)
    end = s.click_off[users + 1]
    return Split(n_train, users, s.clicks[end - 2], s.clicks[end - 1], s.likes[end - 1], s.likes[end - 2])


def histories(s: Sequences, users: np.ndarray, upto: np.ndarray, length: int, recent_first: bool = True
              ) -> np.ndarray:
    """[len(users), length] item codes of each user's clicks before position ``upto`` (exclusive), the most
    recent ``length`` of them, most recent first (or oldest first), right-padded with 0."""
    users = np.asarray(users)
    upto = np.asarray(upto)
    start = s.click_off[users]
    lo = np.maximum(0, upto - length)
    j = np.arange(length)
    if recent_first:
        pos = upto[:, None] - 1 - j[None, :]
    else:
        pos = lo[:, None] + j[None, :]
    valid = (pos >= lo[:, None]) & (pos < upto[:, None])
    idx = np.where(valid, start[:, None] + np.clip(pos, 0, None), 0)
    return np.where(valid, s.clicks[idx], 0)


def clicked_sets(s: Sequences, users: np.ndarray, upto: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(row, item) pairs of the users' clicks (all, or before ``upto``): for masking and rejection sampling."""
    users = np.asarray(users)
    n = s.n_clicks[users] if upto is None else np.asarray(upto)
    rows = np.repeat(np.arange(len(users)), n)
    first = np.repeat(s.click_off[users], n)
    within = np.arange(n.sum()) - np.repeat(np.r_[0, np.cumsum(n)[:-1]], n)
    return rows, s.clicks[first + within]
