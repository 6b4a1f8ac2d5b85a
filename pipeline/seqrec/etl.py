"""The Amazon ETL: streaming, bounded memory, RecBole atomic outputs, the item-text tokenizer.

Pretraining pool (Amazon v2 ratings + metadata)
-----------------------------------------------
1. Metadata is streamed once into a parquet table (asin, title, brand, cat1..3); the set of asins with
   metadata is the only thing kept in memory (as an Arrow array for vectorised ``is_in``).
2. Ratings are streamed in pyarrow CSV batches; rows whose item has no metadata or whose user is a
   Beauty/Sports (fine-tuning) user are dropped; the rest are hash-partitioned by user into
   ``amazon.buckets`` parquet files (so every user's rows land in one bucket).
3. Bucket by bucket (memory ~ one bucket): exact duplicates dropped, users with fewer than
   ``min_user_interactions`` interactions dropped, rows sorted by (user, timestamp).
4. Scaled sets: each kept user gets a seeded uniform key (a keyed hash of the user id and ``seed``);
   users are taken in key order until the interaction count reaches the scale, keeping *all* of a sampled
   user's interactions. So the sets are nested (the 100K users are inside the 1M set) and a scale
   overshoots by less than one user's interactions.
5. Each set is written as RecBole atomic files ``amazon-pretrain-<scale>/amazon-pretrain-<scale>.inter``
   (user_id, item_id, rating, timestamp; chronological per user) and ``.item`` (item_id, title, brand,
   categories).

Fine-tuning sets (Beauty, Sports) are read from 2014 5-core reviews, RecBole atomic files or S3-Rec text,
sorted chronologically per user (stable on ties), users with fewer than ``min_user_interactions`` dropped,
and written the same way (``amazon-beauty``, ``amazon-sports``).
"""

from __future__ import annotations

import logging
import shutil
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from tqdm import tqdm

from pipeline.core.errors import ConfigError, DataError
from pipeline.core.seeding import derive_seed
from pipeline.seqrec import formats as fm

log = logging.getLogger(__name__)

META_SCHEMA = pa.schema([("asin", pa.string()), ("title", pa.string()), ("brand", pa.string()),
                         ("cat1", pa.string()), ("cat2", pa.string()), ("cat3", pa.string())])
POOL_SCHEMA = pa.schema([("item", pa.string()), ("user", pa.string()), ("rating", pa.float64()),
                         ("timestamp", pa.int64())])


def pretrain_name(scale: int) -> str:
    return f"amazon-pretrain-{scale}"


def finetune_name(dataset: str) -> str:
    return f"amazon-{dataset}"


def _hash(values: np.ndarray, key: str) -> np.ndarray:
    """A stable 64-bit hash of strings (pandas' siphash with a fixed 16-byte key)."""
    return pd.util.hash_array(values.astype(object), hash_key=key, categorize=False)


def _hash_key(seed: int, name: str) -> str:
    return f"{derive_seed(seed, 'amazon', name):016x}"[-16:]


# ------------------------------------------------------------------------------------------------ metadata


def stream_metadata(paths: Iterable[Path], out: Path, batch: int = 50_000,
                    stats: dict | None = None) -> pa.Array:
    """Metadata JSON lines -> parquet ``out``; returns the asins (first occurrence wins). ``stats`` (if
    given) gets ``items_with_text``: the items with a non-empty title or brand."""
    writer = pq.ParquetWriter(out, META_SCHEMA)
    seen: set[str] = set()
    buf: list[fm.ItemMeta] = []
    with_text = 0

    def flush():
        if buf:
            cats = [(m.categories + ["", "", ""])[:3] for m in buf]
            writer.write_table(pa.table({"asin": [m.asin for m in buf], "title": [m.title for m in buf],
                                         "brand": [m.brand for m in buf], "cat1": [c[0] for c in cats],
                                         "cat2": [c[1] for c in cats], "cat3": [c[2] for c in cats]},
                                        schema=META_SCHEMA))
            buf.clear()

    try:
        for path in paths:
            for m in tqdm(fm.read_metadata(path), desc=f"metadata {Path(path).name}", unit=" items", disable=None):
                if m.asin in seen:
                    continue
                seen.add(m.asin)
                with_text += bool(m.title or m.brand)
                buf.append(m)
                if len(buf) >= batch:
                    flush()
        flush()
    finally:
        writer.close()
    if stats is not None:
        stats["items_with_text"] = with_text
    return pa.array(sorted(seen), type=pa.string())


TEXT_REMEDY = "or, to train on item ids only, finetune.item_repr: id with finetune.from: scratch"


def require_pool_text(metadata: list[Path], items_with_text: int) -> None:
    """item_repr text needs titles or brands: a pool catalogue without any is a DataError naming the keys
    its metadata has."""
    if items_with_text:
        return
    found = fm.metadata_keys(metadata[0]) if metadata else []
    raise DataError(", ".join(str(p) for p in metadata) or "amazon.local.metadata",
                    f"no item has a title or brand (keys found: {', '.join(found) or 'none'})",
                    expected="'title' and/or 'brand' keys in the metadata for pretrain.item_repr: text; or, to "
                             "train on item ids only, pretrain.item_repr: id with finetune.from: scratch")


def iter_meta(path: Path, asins: set[str] | None = None) -> Iterator[dict]:
    pf = pq.ParquetFile(path)
    for b in pf.iter_batches(batch_size=65_536):
        for row in b.to_pylist():
            if asins is None or row["asin"] in asins:
                yield row


def read_meta_dict(path: Path, asins: set[str]) -> dict[str, fm.ItemMeta]:
    return {r["asin"]: fm.ItemMeta(r["asin"], r["title"], r["brand"], [c for c in (r["cat1"], r["cat2"], r["cat3"]) if c])
            for r in iter_meta(path, asins)}


# ------------------------------------------------------------------------------------------------ the pool


@dataclass
class PoolStats:
    ratings_rows: int = 0
    dropped_no_meta: int = 0
    dropped_finetune_users: int = 0
    duplicates: int = 0
    short_users: int = 0
    short_user_rows: int = 0
    users: int = 0
    interactions: int = 0
    items: int = 0


def partition_ratings(paths: Iterable[Path], meta_asins: pa.Array, exclude_users: pa.Array, bucket_dir: Path,
                      buckets: int, batch_rows: int, seed: int, stats: PoolStats) -> list[Path]:
    """Stream ratings into ``buckets`` parquet files by a hash of the user, dropping rows of items without
    metadata and of the excluded (fine-tuning) users."""
    key = _hash_key(seed, "bucket")
    files = [bucket_dir / f"bucket-{b:04d}.parquet" for b in range(buckets)]
    writers = [pq.ParquetWriter(f, POOL_SCHEMA) for f in files]
    try:
        for path in paths:
            for b in tqdm(fm.read_ratings(path, batch_rows), desc=f"ratings {Path(path).name}", unit=" batches",
                          disable=None):
                stats.ratings_rows += b.num_rows
                has_meta = pc.is_in(b.column("item"), value_set=meta_asins)
                stats.dropped_no_meta += b.num_rows - pc.sum(has_meta).as_py() if b.num_rows else 0
                b = b.filter(has_meta)
                if len(exclude_users):
                    ft = pc.is_in(b.column("user"), value_set=exclude_users)
                    stats.dropped_finetune_users += pc.sum(ft).as_py() or 0
                    b = b.filter(pc.invert(ft))
                if not b.num_rows:
                    continue
                part = _hash(b.column("user").to_numpy(zero_copy_only=False), key) % np.uint64(buckets)
                t = pa.Table.from_batches([b])
                for k in np.unique(part):
                    writers[int(k)].write_table(t.filter(pa.array(part == k)))
    finally:
        for w in writers:
            w.close()
    return files


def clean_bucket(path: Path, min_inter: int, stats: PoolStats) -> pd.DataFrame:
    """One bucket: drop exact duplicates and short users; sort (user, timestamp) stably."""
    df = pq.read_table(path).to_pandas()
    n0 = len(df)
    df = df.drop_duplicates()
    stats.duplicates += n0 - len(df)
    counts = df.groupby("user", sort=False)["item"].transform("size")
    short = counts < min_inter
    stats.short_user_rows += int(short.sum())
    stats.short_users += int(df.loc[short, "user"].nunique())
    df = df.loc[~short]
    return df.sort_values(["user", "timestamp"], kind="stable").reset_index(drop=True)


def scale_thresholds(keys: np.ndarray, counts: np.ndarray, scales: list[int]) -> list[float]:
    """For each scale, the key threshold: users with key <= threshold are in the set. Users are taken in key
    order until the cumulative interaction count reaches the scale."""
    order = np.argsort(keys, kind="stable")
    cum = np.cumsum(counts[order])
    total = int(cum[-1]) if len(cum) else 0
    out = []
    for s in scales:
        if s > total:
            raise ConfigError(f"amazon.scales: {s} interactions requested but the pretraining pool has only "
                              f"{total} (after filtering); lower the scale or add ratings files")
        j = int(np.searchsorted(cum, s, side="left"))
        out.append(float(keys[order[j]]))
    return out


def build_pretrain_sets(ratings: list[Path], metadata: list[Path], exclude_users: set[str], out_dir: Path,
                        work: Path, *, scales: list[int], min_inter: int, buckets: int, batch_rows: int,
                        seed: int, need_text: bool = False) -> tuple[dict, Path]:
    """The whole pool ETL; writes ``out_dir/<pretrain_name(scale)>/`` RecBole files. Returns (report, the
    metadata parquet of the pool catalogue, for the tokenizer). ``need_text`` (pretrain.item_repr text):
    metadata without any title or brand is a DataError before the ratings are read."""
    work.mkdir(parents=True, exist_ok=True)
    meta_path = work / "meta.parquet"
    meta_stats: dict = {}
    meta_asins = stream_metadata(metadata, meta_path, stats=meta_stats)
    if need_text:
        require_pool_text(list(metadata), meta_stats["items_with_text"])
    stats = PoolStats()
    bucket_dir = work / "buckets"
    bucket_dir.mkdir()
    files = partition_ratings(ratings, meta_asins, pa.array(sorted(exclude_users), type=pa.string()), bucket_dir,
                              buckets, batch_rows, seed, stats)
    key = _hash_key(seed, "scale-sample")
    sorted_dir = work / "sorted"
    sorted_dir.mkdir()
    user_keys, user_counts = [], []
    for f in tqdm(files, desc="buckets", disable=None):
        df = clean_bucket(f, min_inter, stats)
        f.unlink()
        users, counts = np.unique(df["user"].to_numpy(object), return_counts=True)
        k = (_hash(users, key) >> np.uint64(11)).astype(np.float64) / float(1 << 53)
        user_keys.append(k)
        user_counts.append(counts)
        df["key"] = (_hash(df["user"].to_numpy(object), key) >> np.uint64(11)).astype(np.float64) / float(1 << 53)
        df.to_parquet(sorted_dir / f.name, index=False)
    keys = np.concatenate(user_keys) if user_keys else np.zeros(0)
    counts = np.concatenate(user_counts) if user_counts else np.zeros(0, dtype=np.int64)
    stats.users, stats.interactions = len(keys), int(counts.sum())
    thresholds = scale_thresholds(keys, counts, scales)
    writers, items_in, per_scale = {}, {}, {}
    for s in scales:
        d = out_dir / pretrain_name(s)
        d.mkdir(parents=True)
        writers[s] = fm.RecboleWriter(d / f"{pretrain_name(s)}.inter", fm.INTER_COLUMNS)
        items_in[s] = set()
        per_scale[s] = {"users": 0, "interactions": 0}
    pool_items: set[str] = set()
    for f in sorted(sorted_dir.iterdir()):
        df = pd.read_parquet(f)
        pool_items.update(df["item"].unique().tolist())
        for s, th in zip(scales, thresholds):
            sub = df[df["key"] <= th]
            w = writers[s]
            for u, i, r, t in zip(sub["user"], sub["item"], sub["rating"], sub["timestamp"]):
                w.write(u, i, r, t)
            items_in[s].update(sub["item"].unique().tolist())
            per_scale[s]["users"] += int(sub["user"].nunique())
            per_scale[s]["interactions"] += len(sub)
    for w in writers.values():
        w.close()
    stats.items = len(pool_items)
    for s in scales:                                  # every set's .item is the whole pool catalogue: the
        d = out_dir / pretrain_name(s)                # sampled evaluation draws negatives from it
        with fm.RecboleWriter(d / f"{pretrain_name(s)}.item", fm.ITEM_COLUMNS) as w:
            for r in iter_meta(meta_path, pool_items):
                w.write(r["asin"], r["title"].split(), r["brand"], [c for c in (r["cat1"], r["cat2"], r["cat3"]) if c])
        per_scale[s]["items"] = len(items_in[s])
        per_scale[s]["catalogue"] = len(pool_items)
    shutil.rmtree(sorted_dir)
    pool_meta = work / "pool_meta.parquet"
    pq.write_table(pq.read_table(meta_path).filter(pc.is_in(pq.read_table(meta_path, columns=["asin"]).column(0),
                                                            value_set=pa.array(sorted(pool_items), pa.string()))),
                   pool_meta)
    report = {"pool": stats.__dict__, "scales": {str(s): per_scale[s] for s in scales},
              "metadata_items": len(meta_asins), "metadata_items_with_text": meta_stats["items_with_text"]}
    log.info("pretraining pool: %d users, %d interactions; scales %s", stats.users, stats.interactions,
             {s: per_scale[s]["interactions"] for s in scales})
    return report, pool_meta


# ------------------------------------------------------------------------------------------------ fine-tuning


@dataclass
class Sequences:
    """Chronological item sequences per user, plus item text where the source has it."""

    users: list[str]
    items: list[list[str]]
    ratings: list[list[float]]
    times: list[list[int]]
    meta: dict[str, fm.ItemMeta] | None    # None: the format carries no item text (S3-Rec)
    item_file: Path | None = None          # RecBole: the .item file the text was read from
    item_columns: list[str] | None = None  # RecBole: its header's column names


def _group(rows: Iterable[tuple[str, str, float, int]]) -> Sequences:
    by_user: dict[str, list] = defaultdict(list)
    for n, (u, i, r, t) in enumerate(rows):
        by_user[u].append((t, n, i, r))
    users, items, ratings, times = [], [], [], []
    for u in sorted(by_user):
        ev = sorted(by_user[u])                       # by timestamp, ties in file order
        users.append(u)
        items.append([e[2] for e in ev])
        ratings.append([e[3] for e in ev])
        times.append([e[0] for e in ev])
    return Sequences(users, items, ratings, times, None)


def read_finetune(fmt: str, path: Path, name: str) -> Sequences:
    """A fine-tuning dataset in any of the three formats. ``path``: the reviews file; the S3-Rec text file;
    or a folder holding ``<x>.inter`` (+ ``<x>.item``) for RecBole."""
    if fmt == "reviews":
        return _group(fm.read_reviews(path))
    if fmt == "s3rec":
        users, items = [], []
        for u, seq in fm.read_s3rec(path):
            users.append(u)
            items.append(seq)
        return Sequences(users, items, [[0.0] * len(s) for s in items],
                         [list(range(len(s))) for s in items], None)       # S3-Rec lines are already ordered
    if fmt == "recbole":
        path = Path(path)
        inters = sorted(path.glob("*.inter")) if path.is_dir() else [path]
        if len(inters) != 1:
            raise DataError(path, f"found {len(inters)} .inter files", expected="exactly one <name>.inter")
        seqs = _group(_recbole_rows(inters[0]))
        item_file = inters[0].with_suffix(".item")
        if item_file.is_file():
            seqs.meta = fm.read_recbole_item(item_file)
            seqs.item_file = item_file
            seqs.item_columns = [c for c, _ in fm.recbole_header(item_file)]
        return seqs
    raise ConfigError(f"amazon.local.finetune_format: '{fmt}' is not one of reviews, recbole, s3rec")


def _recbole_rows(inter: Path) -> Iterator[tuple[str, str, float, int]]:
    """(user, item, rating, timestamp) of a RecBole .inter; the reader makes rating and timestamp finite
    numbers on every row. A file without a timestamp column keeps its file order (all 0); without a
    rating column, ratings are 0."""
    for row in fm.read_recbole(inter, required=("user_id", "item_id")):
        yield row["user_id"], row["item_id"], float(row.get("rating", 0.0)), int(row.get("timestamp", 0))


def require_item_text(name: str, fmt: str, path: Path, seqs: Sequences,
                      pool_meta: dict[str, fm.ItemMeta] | None = None) -> None:
    """With item_repr text, the fine-tuning set ``name`` must have item text: a RecBole ``.item`` with a
    title or brand column (see :func:`formats.read_recbole_item` for the names read) holding some text;
    for 2014 reviews, some of its items with a title or brand in the metadata. Otherwise a DataError naming
    the columns found, the ones expected and the remedy (``item_repr: id``)."""
    expected_cols = (f"a title column ({', '.join(fm.TITLE_ALIASES)}) or a brand column "
                     f"({', '.join(fm.BRAND_ALIASES)}) for finetune.item_repr: text; {TEXT_REMEDY}")
    if fmt == "s3rec":
        raise DataError(path, "S3-Rec files carry item ids only, no item text",
                        expected=f"a format with item text (reviews + metadata, or RecBole .inter + .item); "
                                 f"{TEXT_REMEDY}")
    if fmt == "recbole":
        if seqs.item_file is None:
            raise DataError(path, "no .item file beside the .inter file, so no item text",
                            expected=f"<name>.item with {expected_cols}")
        found = fm.item_text_columns(seqs.item_columns or [])
        if not any(found[f] for f in fm.TEXT_FIELDS):
            raise DataError(seqs.item_file, f"no item-text column (found: {', '.join(seqs.item_columns or [])})",
                            row=1, expected=expected_cols)
    meta = seqs.meta if seqs.meta is not None else pool_meta
    if meta is None:
        return
    items = {i for seq in seqs.items for i in seq}
    if not any(i in meta and (meta[i].title or meta[i].brand) for i in items):
        where = seqs.item_file if seqs.item_file is not None else path
        what = "its .item file" if seqs.item_file is not None else "the metadata (amazon.local.metadata)"
        raise DataError(where, f"none of the {len(items)} items of {name} has a title or brand in {what}",
                        expected=f"item text for finetune.item_repr: text; {TEXT_REMEDY}")


def finetune_users(fmt: str, path: Path) -> set[str]:
    """The user ids of a fine-tuning file (for excluding them from the pretraining pool)."""
    return set(read_finetune(fmt, path, "").users)


def write_finetune(seqs: Sequences, meta: dict[str, fm.ItemMeta] | None, out: Path, name: str,
                   min_inter: int) -> dict:
    out.mkdir(parents=True)
    kept = [k for k, s in enumerate(seqs.items) if len(s) >= min_inter]
    items = sorted({i for k in kept for i in seqs.items[k]})
    with fm.RecboleWriter(out / f"{name}.inter", fm.INTER_COLUMNS) as w:
        for k in kept:
            for i, r, t in zip(seqs.items[k], seqs.ratings[k], seqs.times[k]):
                w.write(seqs.users[k], i, r, t)
    with_text = 0
    if meta is not None:
        with fm.RecboleWriter(out / f"{name}.item", fm.ITEM_COLUMNS) as w:
            for i in items:
                m = meta.get(i)
                with_text += m is not None and bool(m.title or m.brand)
                w.write(i, (m.title if m else "").split(), m.brand if m else "", m.categories if m else [])
    n = sum(len(seqs.items[k]) for k in kept)
    return {"users": len(kept), "items": len(items), "interactions": n,
            "dropped_short_users": len(seqs.users) - len(kept),
            "items_with_text": with_text if meta is not None else None,
            "avg_length": round(n / max(len(kept), 1), 3)}


def write_finetune_sets(finetune: dict[str, Sequences], formats: dict[str, str], pool_meta: dict[str, fm.ItemMeta],
                        out_dir: Path, tokenizer, *, min_inter: int, max_title: int, max_brand: int) -> dict:
    """Each fine-tuning set as ``out_dir/amazon-<name>/`` RecBole files; its item text is the file's own
    (RecBole .item) or, for 2014 reviews, the pool metadata's. Returns per set: counts, the tokenizer's
    coverage of its titles/brands (when it has text) and its ``format``."""
    report = {}
    for n, seqs in finetune.items():
        meta = seqs.meta if seqs.meta is not None else (pool_meta if formats[n] == "reviews" else None)
        st = write_finetune(seqs, meta, out_dir / finetune_name(n), finetune_name(n), min_inter)
        if meta is not None:
            items = sorted({i for seq in seqs.items for i in seq})
            _, _, cov = tokenize_items(tokenizer, [meta[i].title if i in meta else "" for i in items],
                                       [meta[i].brand if i in meta else "" for i in items], max_title, max_brand)
            st["tokenizer_coverage"] = cov
        st["format"] = formats[n]
        report[n] = st
    return report


def users_in_sets(folder: Path, users: set[str]) -> int:
    """Rows of the RecBole sets ``folder/*/*.inter`` whose user is in ``users`` (the pretraining sets against
    the fine-tuning users: must be 0)."""
    n = 0
    for f in folder.glob("*/*.inter"):
        n += sum(1 for r in fm.read_recbole(f) if r["user_id"] in users)
    return n


# ------------------------------------------------------------------------------------------------ tokenizer


def train_tokenizer(texts: Iterable[str], vocab_size: int):
    """BPE over item titles and brands (HF ``tokenizers``): NFKC + lowercase, whitespace/punctuation
    pre-tokenisation; ids 0 = [PAD], 1 = [UNK]."""
    from tokenizers import Tokenizer, normalizers, pre_tokenizers
    from tokenizers.models import BPE
    from tokenizers.trainers import BpeTrainer

    tok = Tokenizer(BPE(unk_token="[UNK]"))
    tok.normalizer = normalizers.Sequence([normalizers.NFKC(), normalizers.Lowercase()])
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    trainer = BpeTrainer(vocab_size=vocab_size, min_frequency=2, special_tokens=["[PAD]", "[UNK]"],
                         show_progress=False)
    tok.train_from_iterator(texts, trainer=trainer)
    return tok


def load_tokenizer(path: Path):
    from tokenizers import Tokenizer

    if not Path(path).is_file():
        raise DataError(path, "tokenizer not found", expected="tokenizer.json written by the etl stage")
    return Tokenizer.from_file(str(path))


def tokenize_items(tok, titles: list[str], brands: list[str], max_title: int, max_brand: int
                   ) -> tuple[np.ndarray, np.ndarray, dict]:
    """Token id matrices [n, max_title] and [n, max_brand] (0-padded, truncated), and coverage stats."""
    unk = tok.token_to_id("[UNK]")
    out = []
    stats = {}
    for name, texts, width in (("title", titles, max_title), ("brand", brands, max_brand)):
        enc = tok.encode_batch([t or "" for t in texts])
        m = np.zeros((len(texts), width), dtype=np.int32)
        total = unk_n = trunc = 0
        for r, e in enumerate(enc):
            ids = e.ids
            total += len(ids)
            unk_n += sum(1 for t in ids if t == unk)
            trunc += len(ids) > width
            ids = ids[:width]
            m[r, :len(ids)] = ids
        stats[name] = {"tokens": total, "unk_rate": round(unk_n / max(total, 1), 5), "truncated_items": trunc,
                       "empty_items": int((m[:, 0] == 0).sum())}
        out.append(m)
    return out[0], out[1], stats
