"""The embedded synthetic Amazon world, written in the real formats.

Planted structure
-----------------
* 8 top-level categories (Beauty, Sports and Outdoors, and six others), each with
  ``clusters_per_category`` latent clusters (a second category level); every item belongs to one cluster,
  with a Zipf popularity p(i | c) inside it.
* Item text carries the cluster: a title is 3-6 words drawn from its cluster's vocabulary plus 1-2 generic
  words and a model code; the brand is one of its cluster's brands. So title/brand tokens predict the
  cluster, and a text-feature model can transfer to a catalogue it has never seen.
* A user has cluster preferences pi_u ~ Dirichlet(concentration) (pool users: mostly their main category,
  some mass elsewhere; Beauty/Sports users: only their category). Sequences drift: the next item stays in
  the current cluster with probability ``stay``, otherwise the cluster is redrawn from pi_u; the item is
  drawn from p(. | c) among items the user has not interacted with yet.
* So the true next-item distribution is P(i | history) ∝ [stay·1(c_i = c_last) + (1-stay)·pi_u(c_i)]
  · p(i | c_i) over unseen items; the oracle sidecar (``oracle/``) stores c_i, p(i | c_i), pi_u and
  ``stay`` so the evaluation can rank by it (:func:`oracle_scores`).

Files (what the real dumps look like)
------------------------------------
* ``ratings/ratings.csv``: Amazon v2 ratings, ``item,user,rating,timestamp`` without header; it contains
  the pool users *and* the Beauty/Sports users (the real v2 dump contains the 2014 reviewers too), plus
  short users (< 5 interactions) and items without metadata, which the ETL must drop.
* ``meta/meta.json``: v2 metadata JSON lines (``asin``, ``title``, ``brand``, ``category``, ...).
* ``finetune/beauty.json``, ``finetune/sports.json``: 2014 5-core review JSON lines (``reviewerID``,
  ``asin``, ``reviewerName``, ``helpful``, ``reviewText``, ``overall``, ``summary``, ``unixReviewTime``,
  ``reviewTime``).
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from pipeline.core.seeding import rng
from pipeline.seqrec.params import AmazonSynthetic

log = logging.getLogger(__name__)

CATEGORIES = ("Beauty", "Sports and Outdoors", "Home and Kitchen", "Toys and Games", "Electronics",
              "Grocery and Gourmet Food", "Clothing Shoes and Jewelry", "Tools and Home Improvement")
FINETUNE_CATEGORY = {"beauty": "Beauty", "sports": "Sports and Outdoors"}
SYLLABLES = ("ka", "lo", "mi", "ne", "ru", "sa", "ti", "vo", "ze", "pa", "qui", "dra", "bel", "mor", "fin",
             "gal", "hex", "jun", "lux", "nov", "orb", "pix", "rin", "sol", "tor", "uma", "vex", "wyn")
GENERIC = ("new", "pack", "set", "premium", "classic", "pro", "mini", "original", "value", "deluxe")
WORDS_PER_CLUSTER = 24
BRANDS_PER_CLUSTER = 4
T0 = 1262304000            # 2010-01-01


def _words(g: np.random.Generator, n: int, taken: set) -> list[str]:
    out = []
    while len(out) < n:
        w = "".join(g.choice(SYLLABLES, size=int(g.integers(2, 4))))
        if w not in taken:
            taken.add(w)
            out.append(w)
    return out


def _ids(g: np.random.Generator, n: int, prefix: str, length: int) -> list[str]:
    alphabet = np.array(list("ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"))
    seen, out = set(), []
    while len(out) < n:
        s = prefix + "".join(g.choice(alphabet, size=length - len(prefix)))
        if s not in seen:
            seen.add(s)
            out.append(s)
    return out


class World:
    """The planted world; :meth:`write` puts it on disk in the real formats."""

    def __init__(self, cfg: AmazonSynthetic, seed: int):
        self.cfg = cfg
        g = rng(seed, "amazon", "world")
        self.n_cat = len(CATEGORIES)
        self.k = cfg.clusters_per_category
        self.n_clusters = self.n_cat * self.k
        n_items = self.n_clusters * cfg.items_per_cluster
        self.item_cluster = np.repeat(np.arange(self.n_clusters), cfg.items_per_cluster)
        zipf = 1.0 / np.arange(1, cfg.items_per_cluster + 1) ** 0.9
        self.p_within = np.concatenate([g.permutation(zipf / zipf.sum()) for _ in range(self.n_clusters)])
        self.asins = _ids(g, n_items, "B0", 10)
        taken: set = set()
        self.cluster_words = [_words(g, WORDS_PER_CLUSTER, taken) for _ in range(self.n_clusters)]
        self.cluster_names = [w.capitalize() for w in _words(g, self.n_clusters, taken)]
        self.cluster_brands = [[w.upper() if j % 2 else w.capitalize() for j, w in
                                enumerate(_words(g, BRANDS_PER_CLUSTER, taken))] for _ in range(self.n_clusters)]
        self.has_meta = g.random(n_items) >= cfg.missing_meta
        self.titles, self.brands, self.cats = [], [], []
        for i in range(n_items):
            c = self.item_cluster[i]
            words = list(g.choice(self.cluster_words[c], size=int(g.integers(3, 7)), replace=False))
            words += list(g.choice(GENERIC, size=int(g.integers(1, 3)), replace=False))
            g.shuffle(words)
            words.append(f"{g.choice(list('ABCDEFGHKLMNPRSTXZ'))}{int(g.integers(10, 999))}")
            self.titles.append(" ".join(w.capitalize() for w in words))
            self.brands.append(str(g.choice(self.cluster_brands[c])) if g.random() > 0.05 else "")
            self.cats.append([CATEGORIES[c // self.k], self.cluster_names[c], self.cluster_names[c] + " "
                              + str(g.choice(GENERIC)).capitalize()])
        self.g = g

    def _clusters_of(self, category: int) -> np.ndarray:
        return np.arange(category * self.k, (category + 1) * self.k)

    def _user(self, g: np.random.Generator, main: int, only_main: bool, short: bool) -> tuple[np.ndarray, list]:
        cfg = self.cfg
        pi = np.zeros(self.n_clusters)
        pi[self._clusters_of(main)] = g.dirichlet(np.full(self.k, cfg.concentration))
        if not only_main:
            pi *= 0.8
            pi += 0.2 * g.dirichlet(np.full(self.n_clusters, cfg.concentration))
        n = int(g.integers(1, 5)) if short else 5 + int(g.geometric(1.0 / max(cfg.mean_length - 4, 1.0)) - 1)
        seen: set = set()
        items = []
        c = int(g.choice(self.n_clusters, p=pi))
        for _ in range(n):
            if items and g.random() >= cfg.stay:
                c = int(g.choice(self.n_clusters, p=pi))
            lo = c * cfg.items_per_cluster
            p = self.p_within[lo:lo + cfg.items_per_cluster].copy()
            for i in seen:
                if lo <= i < lo + cfg.items_per_cluster:
                    p[i - lo] = 0.0
            if p.sum() <= 0:
                break
            i = lo + int(g.choice(cfg.items_per_cluster, p=p / p.sum()))
            seen.add(i)
            items.append(i)
        return pi, items

    def write(self, out: Path) -> dict:
        cfg, g = self.cfg, self.g
        t0 = time.time()
        (out / "ratings").mkdir(parents=True)
        (out / "meta").mkdir()
        (out / "finetune").mkdir()
        (out / "oracle").mkdir()
        user_ids = _ids(g, cfg.pool_users + cfg.beauty_users + cfg.sports_users, "A", 14)
        cat_w = g.dirichlet(np.full(self.n_cat, 3.0))
        rows, users, prefs = [], [], []
        finetune: dict[str, list] = {"beauty": [], "sports": []}
        u = 0
        groups = [("pool", cfg.pool_users), ("beauty", cfg.beauty_users), ("sports", cfg.sports_users)]
        for group, count in groups:
            for _ in range(count):
                if group == "pool":
                    main, only, short = int(g.choice(self.n_cat, p=cat_w)), False, g.random() < cfg.short_users
                else:
                    main, only, short = CATEGORIES.index(FINETUNE_CATEGORY[group]), True, False
                pi, items = self._user(g, main, only, short)
                ts = T0 + int(g.integers(0, 8 * 365 * 86400))
                times = ts + np.cumsum(g.exponential(20 * 86400, size=len(items))).astype(np.int64)
                ratings = g.choice([1, 2, 3, 4, 5], size=len(items), p=[.05, .05, .1, .25, .55])
                uid = user_ids[u]
                u += 1
                users.append(uid)
                prefs.append(pi.astype(np.float32))
                for i, t, r in zip(items, times, ratings):
                    rows.append((self.asins[i], uid, float(r), int(t)))
                    if group != "pool":
                        finetune[group].append((uid, self.asins[i], float(r), int(t)))
        order = g.permutation(len(rows))                  # the dumps are not grouped by user
        with open(out / "ratings" / "ratings.csv", "w", encoding="utf-8") as f:
            for j in order:
                a, uid, r, t = rows[j]
                f.write(f"{a},{uid},{r:.1f},{t}\n")
        with open(out / "meta" / "meta.json", "w", encoding="utf-8") as f:
            for i in g.permutation(len(self.asins)):
                if not self.has_meta[i]:
                    continue
                obj = {"category": self.cats[i], "tech1": "", "description": [], "fit": "",
                       "title": self.titles[i], "also_buy": [], "image": [], "tech2": "", "brand": self.brands[i],
                       "feature": [], "rank": f"{int(g.integers(1, 999999)):,} in {self.cats[i][0]} (",
                       "also_view": [], "main_cat": self.cats[i][0], "similar_item": "", "date": "",
                       "price": f"${g.uniform(3, 80):.2f}", "asin": self.asins[i]}
                f.write(json.dumps(obj) + "\n")
        for name, recs in finetune.items():
            with open(out / "finetune" / f"{name}.json", "w", encoding="utf-8") as f:
                for uid, a, r, t in sorted(recs, key=lambda x: (x[1], x[3])):   # 2014 files: grouped by item
                    day = time.gmtime(t)
                    f.write(json.dumps({"reviewerID": uid, "asin": a, "reviewerName": "Jane D.",
                                        "helpful": [0, 0], "reviewText": "Works as described.",
                                        "overall": r, "summary": "Good", "unixReviewTime": t,
                                        "reviewTime": f"{day.tm_mon:02d} {day.tm_mday}, {day.tm_year}"}) + "\n")
        pq.write_table(pa.table({"asin": self.asins, "cluster": self.item_cluster.astype(np.int32),
                                 "p_within": self.p_within.astype(np.float32)}), out / "oracle" / "items.parquet")
        pq.write_table(pa.table({"user": users, "pi": pa.array([p.tolist() for p in prefs],
                                                               type=pa.list_(pa.float32()))}),
                       out / "oracle" / "users.parquet")
        info = {"stay": cfg.stay, "clusters": self.n_clusters, "items": len(self.asins),
                "items_with_meta": int(self.has_meta.sum()), "ratings": len(rows),
                "finetune": {k: len(v) for k, v in finetune.items()}}
        (out / "oracle" / "world.json").write_text(json.dumps(info, indent=2) + "\n")
        log.info("synthetic Amazon world: %d ratings, %d items in %.1fs", len(rows), len(self.asins), time.time() - t0)
        return info


# ------------------------------------------------------------------------------------------------ the oracle


class Oracle:
    """The planted next-item distribution, keyed by the ETL's item/user indices.

    ``item_cluster[i]`` and ``p_within[i]`` per catalogue index (index 0 = padding), ``pi[u]`` per user
    index, ``stay``. :meth:`scores` gives log P(i | history) up to a constant for candidate items.
    """

    def __init__(self, item_cluster: np.ndarray, p_within: np.ndarray, pi: np.ndarray, stay: float):
        self.item_cluster, self.p_within, self.pi, self.stay = item_cluster, p_within, pi, stay

    def scores(self, user: int, history: np.ndarray, candidates: np.ndarray) -> np.ndarray:
        """log P(candidate | history): the cluster step (stay, or a redraw from pi_u) times p(i | c)
        renormalised over the cluster's items the user has not seen (the generator draws unseen items)."""
        history = history[history > 0]
        c = self.item_cluster[candidates]
        w = (1 - self.stay) * self.pi[user, c] + self.stay * (c == self.item_cluster[history[-1]])
        seen = np.zeros(self.pi.shape[1])
        np.add.at(seen, self.item_cluster[history], self.p_within[history])
        return np.log(np.maximum(w * self.p_within[candidates] / np.maximum(1.0 - seen[c], 1e-12), 1e-30))
