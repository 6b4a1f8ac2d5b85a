"""The embedded synthetic Avazu world.

One world of ad events over the 10 labelled Kaggle days (2014-10-21 .. 30) in the raw Kaggle schema,
with clicks drawn from a planted teacher, written in the three layouts reczoo publishes (x1, x2, x4) plus
a sidecar with the true click probability of every row (the oracle).

World structure (what a CTR model can learn, and what makes it hard):

* Cardinalities are heavy-tailed (Zipf-like heads plus tails, below) and scale with the number of rows;
  ``device_id`` is dominated by one default value (``a99f214a``, 82% of the rows, as in real Avazu),
  ``device_ip`` has a flat head (top value < 1% of the rows) and ~60% of its values seen once.
* Correlated fields: ``site_domain`` / ``site_category`` follow ``site_id`` (the domain with 5% noise),
  ``app_domain`` / ``app_category`` follow ``app_id``; traffic is either site traffic (app fields take
  the real "no app" placeholders) or app traffic (site fields take the real "no site" placeholders);
  ``C15``/``C16`` (banner size), ``C17`` and ``C18``/``C19``/``C21`` follow the creative ``C14``;
  ``C1 = 1002`` goes with ``device_type = 0``; a (non-default) ``device_id`` has one ``device_model`` and
  a home ``device_ip`` (``HOME_IP`` of its rows).
* Teacher: ``logit = b + T * LOGIT_STD * z(sum_f w_f[v] + FM-style rank-r interactions over a set of
  fields + hour-of-day and weekday effects)``, ``z`` centring the score and scaling it to unit std (so the
  oracle AUC is ~0.85 at ``T = 1`` whatever the seed); ``b`` is solved so the mean click probability is
  ``mean_ctr``. First-order weights of rare values have a larger spread (``1 + 2 / sqrt(1 + E[count])``)
  so that the frequency of a value matters for how well it can be learned.
* Heavy tails with many fingerprint ties, as in real Avazu (6.7 M ``device_ip`` values over 40.4 M rows,
  most seen 1-3 times): besides its Zipf head, a share ``TAIL[f]`` of a field's rows draws uniformly from
  a pool of fresh values sized so that each is seen ~Poisson(``TAIL_RATE``) times (mostly once or twice);
  rare sites mostly come with their own rare domain. So many values share their (occurrences,
  clicks) fingerprint with others and only row-level co-occurrence can tell them apart.
* Exact duplicate rows: a share ``DUP_SHARE`` of the rows are verbatim repeats of another event (same
  value in every field, same hour, same label, same oracle p; only x4's Kaggle ``id`` is fresh, ids being
  unique in Kaggle's file), placed next to it in time; they are separate rows in every layout.

Layouts: x4 keeps the raw strings; x1 and x2 re-encode every (field, value) as an anonymised global
integer id: field by field in disjoint ranges (below the declared time-id bases), in a seeded shuffled
order within each field's range (so the id says nothing about the value's index or frequency: sorting
undoes nothing), fields in the layouts' field order, x1 and x2 shuffled
independently; x2 replaces the values seen fewer than ``oov_min_count`` times over the whole world (all
splits) by one OOV id (0, shared by every field), x1 merges nothing.

Sidecars (the truth the pipeline is scored against, never an input to what it learns or infers):

* ``<source>/<split>.oracle.csv``: one column ``p_click``, row-aligned with ``<split>.csv``.
* ``x1/alignment_truth.parquet`` and ``x2/alignment_truth.parquet`` (``ALIGNMENT_TRUTH``): which raw x4
  value every x1/x2 id stands for, one row per (field, id) seen in the source, sorted by field (the
  layouts' field order) then id. Columns: ``field`` (string, a unified field name), ``token`` (string:
  the id as ``normalize`` writes it, the layout's namespace + the decimal id, e.g. ``x1:123``),
  ``x4_token`` (string: the raw x4 value as ``normalize`` writes it for x4, e.g. ``a99f214a``; null on
  the OOV row), ``rare`` (bool: the row is x2's OOV bucket, ``x2:0``, which stands for every value of
  the field seen < ``oov_min_count`` times; always false for x1). The aligner must not read it: it only
  serves the alignment report's accuracy against the truth and the tests.
"""

from __future__ import annotations

import datetime as dt
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
from sklearn.model_selection import StratifiedKFold

from pipeline.core.io import PARQUET_WRITE
from pipeline.core.seeding import derive_seed, rng
from pipeline.ctr.schema import KAGGLE_COLUMNS, Layouts

log = logging.getLogger(__name__)

FIRST_DAY = dt.date(2014, 10, 21)
NUM_DAYS = 10
DEFAULT_ROWS = 400_000

# Real Avazu placeholders: the "no app" triple on site traffic and the "no site" triple on app traffic,
# and the dominant device_id.
NO_APP = ("ecad2386", "7801e8d9", "07d7df22")
NO_SITE = ("85f751fd", "c4e18dd6", "50e219e0")
DEFAULT_DEVICE_ID = "a99f214a"

# Fields whose latent factors take part in the planted pairwise interactions.
INTERACTING = ("banner_pos", "site_id", "site_category", "app_id", "app_category", "device_type",
               "device_conn_type", "device_model", "C14", "C17", "C18", "C21")
# Base cardinalities of the Zipf heads at DEFAULT_ROWS rows; scaled by (rows / DEFAULT_ROWS) ** 0.8 and
# capped at the cardinality of the real 40M-row Kaggle file (so a full-size world has the real field sizes).
CARD = {"site_id": 1500, "site_domain": 1800, "site_category": 22, "app_id": 2000, "app_domain": 220,
        "app_category": 28, "device_id": 12_000, "device_ip": 12_000, "device_model": 3000,
        "C14": 1200, "C17": 220, "C19": 60, "C20": 150, "C21": 50}
REAL_CARD = {"site_id": 4737, "site_domain": 7745, "site_category": 26, "app_id": 8552, "app_domain": 559,
             "app_category": 36, "device_id": 2_686_408, "device_ip": 6_729_486, "device_model": 8251,
             "C14": 2626, "C17": 435, "C19": 68, "C20": 172, "C21": 60}
# Heavy tails: the share of a field's (non-placeholder) rows drawn from its pool of fresh tail values.
# The pool scales linearly with the rows (rows in the tail / TAIL_RATE values), so a tail value is seen
# ~Poisson(TAIL_RATE) times whatever the world's size: ~73% of the seen ones once, ~22% twice.
TAIL = {"site_id": 0.006, "app_id": 0.012, "device_id": 0.35, "device_ip": 0.20, "device_model": 0.004,
        "C14": 0.002}
TAIL_RATE = 0.6
FRESH_DOMAIN = 0.7          # a tail site has its own fresh site_domain with this chance (apps share domains)
HOME_IP = 0.6               # a non-default device_id's rows come from its home device_ip this often
DUP_SHARE = 0.015           # share of the rows that are verbatim repeats of another event
# Spread (std) of the teacher's logit at temperature 1. Unscaled, it follows the draw of the planted
# weights (1.3 .. 1.8 over seeds, oracle AUC 0.80 .. 0.87); fixed, the oracle AUC is ~0.85 for every seed.
LOGIT_STD = 1.75


@dataclass
class World:
    """One world: per-field value indices into per-field string vocabularies, time, labels, oracle."""

    fields: tuple[str, ...]
    index: dict[str, np.ndarray]       # field -> int32 index per row
    values: dict[str, np.ndarray]      # field -> array of string values (object dtype)
    day: np.ndarray                    # 0..9 (2014-10-21 + day)
    hour: np.ndarray                   # 0..23
    ids: np.ndarray                    # uint64 Kaggle ids
    click: np.ndarray                  # int8
    p_click: np.ndarray                # float64 oracle

    @property
    def rows(self) -> int:
        return len(self.click)

    def strings(self, field: str) -> np.ndarray:
        return self.values[field][self.index[field]]

    def counts(self, field: str) -> np.ndarray:
        """Occurrences of every value of ``field`` over the whole world (all splits of every layout)."""
        return np.bincount(self.index[field], minlength=len(self.values[field]))


def _zipf_probs(n: int, a: float) -> np.ndarray:
    p = 1.0 / np.arange(1, n + 1) ** a
    return p / p.sum()


def _hex_values(g: np.random.Generator, n: int, taken: set[str]) -> np.ndarray:
    """n distinct 8-hex-digit ids, none in ``taken``."""
    out: list[str] = []
    seen = set(taken)
    while len(out) < n:
        for v in g.integers(0, 2**32, size=n - len(out) + 8, dtype=np.uint64):
            s = f"{int(v):08x}"
            if s not in seen:
                seen.add(s)
                out.append(s)
                if len(out) == n:
                    break
    return np.array(out, dtype=object)


def _cat(g: np.random.Generator, values, probs, size: int):
    values = np.asarray(values, dtype=object)
    probs = np.asarray(probs, dtype=float)
    return values, g.choice(len(values), size=size, p=probs / probs.sum()).astype(np.int32)


def _tail_pool(field: str, tail_rows: float, head: int) -> int:
    """Size of ``field``'s tail pool for ``tail_rows`` expected tail rows (capped at the real cardinality)."""
    if tail_rows <= 0:
        return 0
    return max(1, min(int(round(tail_rows / TAIL_RATE)), REAL_CARD[field] - head))


def _heavy(g: np.random.Generator, field: str, n: int, a: float, size: int) -> tuple[np.ndarray, int]:
    """``size`` draws over a Zipf(a) head of ``n`` values (0..n-1) and ``field``'s tail pool (n..n+tail-1):
    a share ``TAIL[field]`` of the draws is uniform over the tail pool. Returns (draws, tail pool size)."""
    share = TAIL.get(field, 0.0)
    n_tail = _tail_pool(field, share * size, n)
    out = g.choice(n, size=size, p=_zipf_probs(n, a)).astype(np.int32)
    if n_tail:
        in_tail = g.random(size) < share
        out[in_tail] = n + g.integers(0, n_tail, size=int(in_tail.sum()), dtype=np.int32)
    return out, n_tail


def generate_world(rows: int, seed: int, *, mean_ctr: float = 0.17, rank: int = 4,
                   temperature: float = 1.0, fields: tuple[str, ...] | None = None,
                   dup_share: float = DUP_SHARE) -> World:
    """Draw one world of ``rows`` events, deterministic in ``seed``; a share ``dup_share`` of the rows
    repeats another event verbatim."""
    fields = fields or tuple(c for c in KAGGLE_COLUMNS if c not in ("id", "click", "hour"))
    g = rng(seed, "avazu-world")
    n_dup = int(round(dup_share * rows))
    total, rows = rows, rows - n_dup          # distinct events drawn below; the copies are added at the end
    scale = (total / DEFAULT_ROWS) ** 0.8
    card = {k: min(REAL_CARD[k], max(8, int(round(v * scale)))) for k, v in CARD.items()}
    idx: dict[str, np.ndarray] = {}
    vals: dict[str, np.ndarray] = {}

    # --- time: 240 hourly slots with a diurnal volume profile; rows come in time order like Kaggle's file
    hours = np.arange(24)
    diurnal = 1.0 + 0.55 * np.sin(2 * np.pi * (hours - 8) / 24)
    day_vol = 1.0 + 0.15 * g.standard_normal(NUM_DAYS)
    slot_p = (day_vol[:, None] * diurnal[None, :]).ravel()
    slot = np.sort(g.choice(NUM_DAYS * 24, size=rows, p=slot_p / slot_p.sum()))
    day, hour = (slot // 24).astype(np.int8), (slot % 24).astype(np.int8)
    weekday = np.array([(FIRST_DAY + dt.timedelta(days=int(d))).weekday() for d in range(NUM_DAYS)])[day]

    # --- site vs app traffic (exclusive)
    is_site = g.random(rows) < 0.62
    taken = set(NO_APP) | set(NO_SITE) | {DEFAULT_DEVICE_ID}

    def fresh(n: int) -> np.ndarray:
        v = _hex_values(g, n, taken)
        taken.update(v.tolist())
        return v

    def entity(prefix: str, n: int, a: float, mask: np.ndarray, placeholder: str):
        i = np.zeros(rows, dtype=np.int32)
        draws, n_tail = _heavy(g, prefix, n, a, int(mask.sum()))
        i[mask] = 1 + draws
        vals[prefix], idx[prefix] = np.concatenate([[placeholder], fresh(n + n_tail)]).astype(object), i
        return i, n, n_tail

    site = entity("site_id", card["site_id"], 1.15, is_site, NO_SITE[0])
    app = entity("app_id", card["app_id"], 1.2, ~is_site, NO_APP[0])

    def follower(name: str, parent, n: int, placeholder: str, noise: float, own_tail: bool):
        """``name`` follows ``parent`` (index, head size, tail size): one primary value per parent value
        (a fresh one of its own for a share FRESH_DOMAIN of the tail parents when ``own_tail``)."""
        p_idx, p_head, p_tail = parent
        primary = 1 + g.choice(n, size=p_head + p_tail + 1, p=_zipf_probs(n, 0.9)).astype(np.int32)
        primary[0] = 0                        # the placeholder parent keeps the placeholder child
        n_own = 0
        if own_tail and p_tail:
            own = 1 + p_head + np.flatnonzero(g.random(p_tail) < FRESH_DOMAIN)
            n_own = len(own)
            primary[own] = 1 + n + np.arange(n_own, dtype=np.int32)
        i = primary[p_idx]
        flip = (p_idx > 0) & (g.random(rows) < noise)
        i[flip] = 1 + g.integers(0, n, size=int(flip.sum()), dtype=np.int32)
        vals[name] = np.concatenate([[placeholder], fresh(n + n_own)]).astype(object)
        idx[name] = i

    follower("site_domain", site, card["site_domain"], NO_SITE[1], 0.05, True)
    follower("site_category", site, card["site_category"], NO_SITE[2], 0.0, False)
    follower("app_domain", app, card["app_domain"], NO_APP[1], 0.05, False)
    follower("app_category", app, card["app_category"], NO_APP[2], 0.0, False)

    # --- device
    vals["device_type"], idx["device_type"] = _cat(g, ["1", "0", "4", "5", "2"],
                                                   [0.92, 0.055, 0.019, 0.006, 0.0001], rows)
    c1_vals = np.array(["1005", "1002", "1010", "1012", "1007", "1001", "1008"], dtype=object)
    c1 = g.choice(len(c1_vals), size=rows, p=_norm([0.96, 0.0, 0.028, 0.008, 0.003, 0.0007, 0.0003]))
    c1[vals["device_type"][idx["device_type"]] == "0"] = 1            # C1 1002 <-> device_type 0
    vals["C1"], idx["C1"] = c1_vals, c1.astype(np.int32)
    vals["banner_pos"], idx["banner_pos"] = _cat(g, ["0", "1", "7", "2", "4", "5", "3"],
                                                 [0.72, 0.277, 0.0011, 0.0008, 0.0005, 0.0004, 0.0002], rows)
    di = np.zeros(rows, dtype=np.int32)
    not_default = g.random(rows) >= 0.82
    draws, dev_tail = _heavy(g, "device_id", card["device_id"], 0.75, int(not_default.sum()))
    di[not_default] = 1 + draws
    vals["device_id"] = np.concatenate([[DEFAULT_DEVICE_ID], fresh(card["device_id"] + dev_tail)]).astype(object)
    idx["device_id"] = di
    idx["device_ip"], ip_tail = _heavy(g, "device_ip", card["device_ip"], 0.6, rows)
    vals["device_ip"] = fresh(card["device_ip"] + ip_tail)
    idx["device_model"], model_tail = _heavy(g, "device_model", card["device_model"], 1.05, rows)
    vals["device_model"] = fresh(card["device_model"] + model_tail)
    # a (non-default) device has one model and a home ip it uses HOME_IP of the time
    n_dev = len(vals["device_id"])
    model_of = idx["device_model"][g.integers(0, rows, size=n_dev)]
    idx["device_model"][not_default] = model_of[di[not_default]]
    home_ip = idx["device_ip"][g.integers(0, rows, size=n_dev)]
    at_home = not_default & (g.random(rows) < HOME_IP)
    idx["device_ip"][at_home] = home_ip[di[at_home]]
    vals["device_conn_type"], idx["device_conn_type"] = _cat(g, ["0", "2", "3", "5"],
                                                             [0.86, 0.083, 0.053, 0.004], rows)

    # --- creative: C14 drives banner size (C15, C16), C17, and C17 drives C18, C19, C21
    idx["C14"], c14_tail = _heavy(g, "C14", card["C14"], 1.0, rows)
    n14, n17 = card["C14"] + c14_tail, card["C17"]
    vals["C14"] = np.array([str(v) for v in np.sort(g.choice(np.arange(375, 24053), n14, replace=False))],
                           dtype=object)
    sizes = [("320", "50"), ("300", "250"), ("216", "36"), ("728", "90"), ("120", "20"), ("480", "320"),
             ("1024", "768"), ("768", "1024")]
    size_of_14 = g.choice(len(sizes), size=n14, p=_norm([0.93, 0.045, 0.012, 0.006, 0.003, 0.002, 0.001, 0.001]))
    vals["C15"] = np.array(sorted({w for w, _ in sizes}), dtype=object)
    vals["C16"] = np.array(sorted({h for _, h in sizes}), dtype=object)
    c15_pos = {v: i for i, v in enumerate(vals["C15"])}
    c16_pos = {v: i for i, v in enumerate(vals["C16"])}
    idx["C15"] = np.array([c15_pos[sizes[s][0]] for s in size_of_14], dtype=np.int32)[idx["C14"]]
    idx["C16"] = np.array([c16_pos[sizes[s][1]] for s in size_of_14], dtype=np.int32)[idx["C14"]]
    vals["C17"] = np.array([str(v) for v in np.sort(g.choice(np.arange(112, 2759), n17, replace=False))],
                           dtype=object)
    c17_of_14 = g.choice(n17, size=n14, p=_zipf_probs(n17, 0.8)).astype(np.int32)
    idx["C17"] = c17_of_14[idx["C14"]]
    vals["C18"] = np.array(["0", "3", "2", "1"], dtype=object)
    idx["C18"] = g.choice(4, size=n17, p=_norm([0.42, 0.34, 0.17, 0.07])).astype(np.int32)[idx["C17"]]
    n19, n20, n21 = card["C19"], card["C20"], card["C21"]
    vals["C19"] = np.array([str(v) for v in np.sort(g.choice(np.arange(33, 1960), n19, replace=False))],
                           dtype=object)
    idx["C19"] = g.choice(n19, size=n17, p=_zipf_probs(n19, 1.0)).astype(np.int32)[idx["C17"]]
    vals["C20"] = np.concatenate([["-1"], [str(100000 + v) for v in
                                           np.sort(g.choice(np.arange(1, 260), n20, replace=False))]]).astype(object)
    c20 = 1 + g.choice(n20, size=rows, p=_zipf_probs(n20, 1.0)).astype(np.int32)
    c20[g.random(rows) < 0.47] = 0
    idx["C20"] = c20
    vals["C21"] = np.array([str(v) for v in np.sort(g.choice(np.arange(1, 256), n21, replace=False))],
                           dtype=object)
    idx["C21"] = g.choice(n21, size=n17, p=_zipf_probs(n21, 1.0)).astype(np.int32)[idx["C17"]]

    missing = set(fields) - set(idx)
    if missing:
        raise ValueError(f"synthetic world has no generator for fields {sorted(missing)}")

    # --- planted teacher
    tg = rng(seed, "avazu-teacher")
    score = np.zeros(rows)
    for f in fields:
        n = len(vals[f])
        counts = np.bincount(idx[f], minlength=n)   # the world's own counts: rare values spread wider
        spread = 0.35 * (1.0 + 2.0 / np.sqrt(1.0 + counts))
        if f in ("device_ip", "device_id"):
            spread *= 0.8
        w = tg.standard_normal(n) * spread
        score += w[idx[f]]
    fm_sum = np.zeros((rows, rank))
    fm_sq = np.zeros(rows)
    for f in INTERACTING:
        e = tg.standard_normal((len(vals[f]), rank)) * (0.45 / np.sqrt(rank))
        ef = e[idx[f]]
        fm_sum += ef
        fm_sq += (ef * ef).sum(1)
    score += 0.5 * ((fm_sum * fm_sum).sum(1) - fm_sq)
    hod_effect = 0.25 * np.sin(2 * np.pi * (np.arange(24) - 14) / 24)
    wd_effect = np.array([0.0, 0.05, 0.03, -0.02, 0.08, -0.12, -0.15])
    score += hod_effect[hour] + wd_effect[weekday]
    score = score - score.mean()
    score = temperature * LOGIT_STD * score / score.std()   # a fixed spread: the oracle AUC ~0.85 at
    #                                                         temperature 1 whatever the seed's draw
    bias = _solve_bias(score, mean_ctr)
    p = 1.0 / (1.0 + np.exp(-(score + bias)))
    click = (rng(seed, "avazu-labels").random(rows) < p).astype(np.int8)

    # --- exact duplicates: n_dup copies of events drawn at random (an event may be copied more than
    # once), each placed right after its original (same hour), so the file stays in time order
    copies = np.bincount(rng(seed, "avazu-duplicates").integers(0, rows, size=n_dup), minlength=rows) + 1

    def rep(a: np.ndarray) -> np.ndarray:
        return np.repeat(a, copies)

    ids = rng(seed, "avazu-ids").integers(10**18, 2**64 - 1, size=total, dtype=np.uint64, endpoint=True)
    p, click = rep(p), rep(click)
    log.info("synthetic Avazu world: %d rows (%d exact duplicates), mean p %.4f, CTR %.4f",
             total, n_dup, p.mean(), click.mean())
    return World(fields=tuple(fields), index={f: rep(idx[f]) for f in fields},
                 values={f: vals[f] for f in fields}, day=rep(day), hour=rep(hour), ids=ids, click=click,
                 p_click=p)


def _norm(p) -> np.ndarray:
    p = np.asarray(p, dtype=float)
    return p / p.sum()


def _solve_bias(score: np.ndarray, target: float) -> float:
    lo, hi = -20.0, 20.0
    for _ in range(60):
        mid = 0.5 * (lo + hi)
        if (1.0 / (1.0 + np.exp(-(score + mid)))).mean() < target:
            lo = mid
        else:
            hi = mid
    return 0.5 * (lo + hi)


# ----------------------------------------------------------------------------------------------------
# Writing the three reczoo layouts


def _split_x4(world: World, seed: int) -> dict[str, np.ndarray]:
    """reczoo/AutoInt: StratifiedKFold(10, shuffle) on click; fold 0 = test, fold 1 = valid, rest train."""
    folds = StratifiedKFold(n_splits=10, shuffle=True, random_state=derive_seed(seed, "x4") % 2**32)
    parts = [te for _, te in folds.split(np.zeros(world.rows), world.click)]
    return {"train": np.sort(np.concatenate(parts[2:])), "valid": np.sort(parts[1]), "test": np.sort(parts[0])}


def _split_random(world: World, seed: int, name: str, fracs: dict[str, float]) -> dict[str, np.ndarray]:
    perm = rng(seed, name).permutation(world.rows)
    out, start = {}, 0
    names = list(fracs)
    for i, split in enumerate(names):
        stop = world.rows if i == len(names) - 1 else start + int(round(fracs[split] * world.rows))
        out[split] = np.sort(perm[start:stop])
        start = stop
    return out


def _global_ids(world: World, order: tuple[str, ...], min_count: int | None, oov_id: int, start: int,
                g: np.random.Generator) -> tuple[dict[str, np.ndarray], int]:
    """Global integer ids over (field, value): field by field in consecutive disjoint ranges from ``start``,
    in a shuffled order (``g``) within each field's range; values seen fewer than ``min_count`` times over
    the whole world -> ``oov_id``; values never seen -> -1 (they appear in no file)."""
    out, next_id = {}, start
    for f in order:
        counts = world.counts(f)
        keep = counts >= (min_count or 1)
        ids = np.where(counts > 0, oov_id, -1).astype(np.int64)
        k = int(keep.sum())
        ids[keep] = next_id + g.permutation(k)
        next_id += k
        out[f] = ids
    return out, next_id


ALIGNMENT_TRUTH = "alignment_truth.parquet"


def alignment_truth(world: World, ids: dict[str, np.ndarray], fields: tuple[str, ...], namespace: str,
                    x4_namespace: str, oov_id: int | None) -> pa.Table:
    """The truth sidecar of one re-encoded source (format: the module docstring): one row per (field, id)
    seen in the world, sorted by field then id; the OOV id (when ``oov_id`` is not None and the field has
    values merged into it) is one row with ``rare`` true and a null ``x4_token``."""
    field_col, token, x4_token, rare = [], [], [], []
    for f in fields:
        fid = ids[f]
        kept = np.flatnonzero((fid >= 0) & (fid != oov_id)) if oov_id is not None else np.flatnonzero(fid >= 0)
        entries = [(int(fid[v]), x4_namespace + world.values[f][v], False) for v in kept]
        if oov_id is not None and bool((fid == oov_id).any()):
            entries.append((oov_id, None, True))
        for i, x4, r in sorted(entries, key=lambda e: e[0]):
            field_col.append(f)
            token.append(f"{namespace}{i}")
            x4_token.append(x4)
            rare.append(r)
    return pa.table({"field": pa.array(field_col, pa.string()), "token": pa.array(token, pa.string()),
                     "x4_token": pa.array(x4_token, pa.string()), "rare": pa.array(rare, pa.bool_())})


def _write_csv(path: Path, columns: dict[str, np.ndarray]) -> None:
    table = pa.table({k: pa.array(v, type=pa.string()) if v.dtype == object else pa.array(v)
                      for k, v in columns.items()})
    with open(path, "wb") as f:                      # unquoted header, as in the published files
        f.write((",".join(table.column_names) + "\n").encode())
        pacsv.write_csv(table, f, write_options=pacsv.WriteOptions(include_header=False, quoting_style="none"))


def _write_oracle(path: Path, p: np.ndarray) -> None:
    _write_csv(path, {"p_click": np.round(p, 7).astype(np.float32)})


def write_layouts(world: World, out_dir: str | Path, layouts: Layouts, sources: list[str], seed: int) -> dict:
    """Write ``sources`` (subset of x1, x2, x4) under ``out_dir/<source>/<split>.csv`` with oracle sidecars
    ``<split>.oracle.csv`` (one column ``p_click``, row-aligned with the CSV) and, for x1 and x2, the
    alignment truth ``out_dir/<source>/alignment_truth.parquet`` (see the module docstring). Returns row
    counts."""
    out_dir = Path(out_dir)
    summary: dict[str, dict] = {}
    hours_str = np.array([f"{h:02d}" for h in range(24)], dtype=object)
    date_str = np.array([(FIRST_DAY + dt.timedelta(days=d)).strftime("%y%m%d") for d in range(NUM_DAYS)],
                        dtype=object)
    for source in sources:
        layout = layouts[source]
        field_to_col = {v: k for k, v in layout.columns.items()}
        if source == "x4":
            splits = _split_x4(world, seed)
        elif source == "x1":
            splits = _split_random(world, seed, "x1", {"train": 0.7, "valid": 0.1, "test": 0.2})
        elif source == "x2":
            splits = _split_random(world, seed, "x2", {"train": 0.8, "test": 0.2})
        else:
            raise ValueError(f"unknown Avazu source {source}")
        if set(splits) != set(layout.splits):
            raise ValueError(f"layout {source} declares splits {layout.splits}, world writes {sorted(splits)}")
        sdir = out_dir / source
        sdir.mkdir(parents=True, exist_ok=True)
        if source in ("x1", "x2"):
            oov = 0 if layout.oov_min_count else None          # x2: one OOV id, 0, shared by every field
            ids, n_ids = _global_ids(world, layouts.fields, layout.oov_min_count, oov_id=layout.oov_id or 0,
                                     start=1 if oov is not None else 0, g=rng(seed, source, "global-ids"))
            t = layout.time
            limit = t.base if t.kind == "hour_id" else min(t.hour_base, t.mday_base, t.wday_base)
            if n_ids > limit:
                raise ValueError(f"{source}: {n_ids} global ids collide with the declared time id bases")
            x4_ns = layouts.layouts["x4"].namespace if "x4" in layouts.layouts else ""
            truth = alignment_truth(world, ids, layouts.fields, layout.namespace, x4_ns, oov)
            pq.write_table(truth, sdir / ALIGNMENT_TRUTH, **PARQUET_WRITE)
        summary[source] = {}
        for split, rows in splits.items():
            cols: dict[str, np.ndarray] = {}
            if source == "x4":
                cols["id"] = world.ids[rows]
                cols[layout.label] = world.click[rows]
                cols[layout.time.column] = date_str[world.day[rows]] + hours_str[world.hour[rows]]
                for f in layouts.fields:
                    cols[field_to_col[f]] = world.strings(f)[rows]
                cols = {c: cols[c] for c in KAGGLE_COLUMNS}          # Kaggle column order
            else:
                cols[layout.label] = world.click[rows]
                for f in layouts.fields:
                    cols[field_to_col[f]] = ids[f][world.index[f][rows]]
                t = layout.time
                if t.kind == "hour_id":
                    cols[t.column] = t.base + world.hour[rows].astype(np.int64)
                else:
                    d = world.day[rows].astype(np.int64)
                    cols[t.hour] = t.hour_base + world.hour[rows].astype(np.int64)
                    cols[t.mday] = t.mday_base + d
                    wd = np.array([((FIRST_DAY + dt.timedelta(days=int(k))).weekday() + 1) % 7
                                   for k in range(NUM_DAYS)])       # Sunday = 0, as date.strftime('%w')
                    cols[t.wday] = t.wday_base + wd[d]
            _write_csv(sdir / f"{split}.csv", cols)
            _write_oracle(sdir / f"{split}.oracle.csv", world.p_click[rows])
            summary[source][split] = {"rows": int(len(rows)), "ctr": float(world.click[rows].mean())}
    return summary
