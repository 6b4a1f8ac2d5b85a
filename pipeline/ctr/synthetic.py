"""The embedded synthetic Avazu world.

One world of ad events over the 10 labelled Kaggle days (2014-10-21 .. 30) in the raw Kaggle schema,
with clicks drawn from a planted teacher, written in the three layouts reczoo publishes (x1, x2, x4) plus
a sidecar with the true click probability of every row (the oracle).

World structure (what a CTR model can learn, and what makes it hard):

* Cardinalities are heavy-tailed (Zipf-like) and scale with the number of rows; ``device_id`` is
  dominated by one default value (``a99f214a``, as in real Avazu) and has a long tail of singletons,
  ``device_ip`` is almost all tail.
* Correlated fields: ``site_domain`` / ``site_category`` follow ``site_id`` (the domain with 5% noise),
  ``app_domain`` / ``app_category`` follow ``app_id``; traffic is either site traffic (app fields take
  the real "no app" placeholders) or app traffic (site fields take the real "no site" placeholders);
  ``C15``/``C16`` (banner size), ``C17`` and ``C18``/``C19``/``C21`` follow the creative ``C14``;
  ``C1 = 1002`` goes with ``device_type = 0``.
* Teacher: ``logit = b + T * (sum_f w_f[v] + FM-style rank-r interactions over a set of fields
  + hour-of-day and weekday effects)``; ``b`` is solved so the mean click probability is
  ``mean_ctr``. First-order weights of rare values have a larger spread (``1 + 2 / sqrt(1 + E[count])``)
  so that the frequency of a value matters for how well it can be learned.
"""

from __future__ import annotations

import datetime as dt
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
from sklearn.model_selection import StratifiedKFold

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
# Base cardinalities at DEFAULT_ROWS rows; scaled by (rows / DEFAULT_ROWS) ** 0.8 and capped at the
# cardinality of the real 40M-row Kaggle file (so a full-size world has the real field sizes).
CARD = {"site_id": 1500, "site_domain": 1800, "site_category": 22, "app_id": 2000, "app_domain": 220,
        "app_category": 28, "device_id": 60_000, "device_ip": 150_000, "device_model": 3000,
        "C14": 1200, "C17": 220, "C19": 60, "C20": 150, "C21": 50}
REAL_CARD = {"site_id": 4737, "site_domain": 7745, "site_category": 26, "app_id": 8552, "app_domain": 559,
             "app_category": 36, "device_id": 2_686_408, "device_ip": 6_729_486, "device_model": 8251,
             "C14": 2626, "C17": 435, "C19": 68, "C20": 172, "C21": 60}


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


def generate_world(rows: int, seed: int, *, mean_ctr: float = 0.17, rank: int = 4,
                   temperature: float = 1.0, fields: tuple[str, ...] | None = None) -> World:
    """Draw one world of ``rows`` events, deterministic in ``seed``."""
    fields = fields or tuple(c for c in KAGGLE_COLUMNS if c not in ("id", "click", "hour"))
    g = rng(seed, "avazu-world")
    scale = (rows / DEFAULT_ROWS) ** 0.8
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

    def entity(prefix: str, n: int, a: float, mask: np.ndarray, placeholder: str):
        v = np.concatenate([[placeholder], _hex_values(g, n, taken)]).astype(object)
        taken.update(v.tolist())
        i = np.zeros(rows, dtype=np.int32)
        i[mask] = 1 + g.choice(n, size=int(mask.sum()), p=_zipf_probs(n, a)).astype(np.int32)
        vals[prefix], idx[prefix] = v, i
        return i

    site = entity("site_id", card["site_id"], 1.15, is_site, NO_SITE[0])
    app = entity("app_id", card["app_id"], 1.2, ~is_site, NO_APP[0])

    def follower(name: str, parent: np.ndarray, n_parent: int, n: int, placeholder: str, noise: float):
        v = np.concatenate([[placeholder], _hex_values(g, n, taken)]).astype(object)
        taken.update(v.tolist())
        primary = 1 + g.choice(n, size=n_parent + 1, p=_zipf_probs(n, 0.9)).astype(np.int32)
        primary[0] = 0                        # the placeholder parent keeps the placeholder child
        i = primary[parent]
        flip = (parent > 0) & (g.random(rows) < noise)
        i[flip] = 1 + g.integers(0, n, size=int(flip.sum()), dtype=np.int32)
        vals[name], idx[name] = v, i

    follower("site_domain", site, card["site_id"], card["site_domain"], NO_SITE[1], 0.05)
    follower("site_category", site, card["site_id"], card["site_category"], NO_SITE[2], 0.0)
    follower("app_domain", app, card["app_id"], card["app_domain"], NO_APP[1], 0.05)
    follower("app_category", app, card["app_id"], card["app_category"], NO_APP[2], 0.0)

    # --- device
    vals["device_type"], idx["device_type"] = _cat(g, ["1", "0", "4", "5", "2"],
                                                   [0.92, 0.055, 0.019, 0.006, 0.0001], rows)
    c1_vals = np.array(["1005", "1002", "1010", "1012", "1007", "1001", "1008"], dtype=object)
    c1 = g.choice(len(c1_vals), size=rows, p=_norm([0.96, 0.0, 0.028, 0.008, 0.003, 0.0007, 0.0003]))
    c1[vals["device_type"][idx["device_type"]] == "0"] = 1            # C1 1002 <-> device_type 0
    vals["C1"], idx["C1"] = c1_vals, c1.astype(np.int32)
    vals["banner_pos"], idx["banner_pos"] = _cat(g, ["0", "1", "7", "2", "4", "5", "3"],
                                                 [0.72, 0.277, 0.0011, 0.0008, 0.0005, 0.0004, 0.0002], rows)
    dev_tail = card["device_id"]
    dv = np.concatenate([[DEFAULT_DEVICE_ID], _hex_values(g, dev_tail, taken)]).astype(object)
    taken.update(dv.tolist())
    di = np.zeros(rows, dtype=np.int32)
    tail = g.random(rows) >= 0.82
    di[tail] = 1 + g.choice(dev_tail, size=int(tail.sum()), p=_zipf_probs(dev_tail, 0.6)).astype(np.int32)
    vals["device_id"], idx["device_id"] = dv, di
    n_ip = card["device_ip"]
    vals["device_ip"] = _hex_values(g, n_ip, taken)
    idx["device_ip"] = g.choice(n_ip, size=rows, p=_zipf_probs(n_ip, 0.75)).astype(np.int32)
    n_model = card["device_model"]
    vals["device_model"] = _hex_values(g, n_model, taken)
    idx["device_model"] = g.choice(n_model, size=rows, p=_zipf_probs(n_model, 1.05)).astype(np.int32)
    vals["device_conn_type"], idx["device_conn_type"] = _cat(g, ["0", "2", "3", "5"],
                                                             [0.86, 0.083, 0.053, 0.004], rows)

    # --- creative: C14 drives banner size (C15, C16), C17, and C17 drives C18, C19, C21
    n14, n17 = card["C14"], card["C17"]
    vals["C14"] = np.array([str(v) for v in np.sort(g.choice(np.arange(375, 24053), n14, replace=False))],
                           dtype=object)
    idx["C14"] = g.choice(n14, size=rows, p=_zipf_probs(n14, 1.0)).astype(np.int32)
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
    score = temperature * (score - score.mean())
    bias = _solve_bias(score, mean_ctr)
    p = 1.0 / (1.0 + np.exp(-(score + bias)))
    click = (rng(seed, "avazu-labels").random(rows) < p).astype(np.int8)
    ids = rng(seed, "avazu-ids").integers(10**18, 2**64 - 1, size=rows, dtype=np.uint64, endpoint=True)
    log.info("synthetic Avazu world: %d rows, mean p %.4f, CTR %.4f", rows, p.mean(), click.mean())
    return World(fields=tuple(fields), index={f: idx[f] for f in fields}, values={f: vals[f] for f in fields},
                 day=day, hour=hour, ids=ids, click=click, p_click=p)


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


def _global_ids(world: World, order: list[str], min_count: int | None, oov_id: int, start: int):
    """Global integer ids over (field, value), field by field; values rarer than min_count -> oov_id."""
    out, next_id = {}, start
    for f in order:
        counts = np.bincount(world.index[f], minlength=len(world.values[f]))
        keep = counts >= (min_count or 1)
        ids = np.full(len(counts), oov_id, dtype=np.int64)
        ids[keep] = next_id + np.arange(int(keep.sum()))
        next_id += int(keep.sum())
        out[f] = ids
    return out, next_id


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
    ``<split>.oracle.csv`` (one column ``p_click``, row-aligned with the CSV). Returns row counts."""
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
        if source in ("x1", "x2"):
            ids, n_ids = _global_ids(world, list(layouts.fields), layout.oov_min_count, oov_id=0,
                                     start=1 if layout.oov_min_count else 0)
            t = layout.time
            limit = t.base if t.kind == "hour_id" else min(t.hour_base, t.mday_base, t.wday_base)
            if n_ids > limit:
                raise ValueError(f"{source}: {n_ids} global ids collide with the declared time id bases")
        sdir = out_dir / source
        sdir.mkdir(parents=True, exist_ok=True)
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
