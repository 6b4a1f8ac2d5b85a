"""Avazu data stages: download -> normalize (x1, x2, x4) -> split_valid (x2) -> sample -> vocab.

Each command reads params.yaml, calls ``pipeline.ctr`` and writes exactly the outs dvc.yaml declares,
atomically (a failed stage leaves nothing behind).
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import typer
from sklearn.metrics import log_loss, roc_auc_score

from pipeline.core.config import AvazuParams, Params, load_params
from pipeline.core.errors import ConfigError
from pipeline.core.io import atomic_outputs, write_json
from pipeline.ctr import download as dl
from pipeline.ctr import vocab as vc
from pipeline.ctr.normalize import normalize_source
from pipeline.ctr.schema import Layouts, load_layouts
from pipeline.ctr.splits import read_labels, sample_name, stratified_mask, write_subsets

log = logging.getLogger(__name__)
app = typer.Typer(no_args_is_help=True, help="Avazu / LLM-CTR branch.")

DATA = Path("data/avazu")
RAW = DATA / "raw"
NORMALIZED = DATA / "interim" / "base" / "normalized"     # base = per-source splits before sampling
SPLIT = DATA / "interim" / "base" / "split"
SAMPLE = DATA / "interim" / "sample"
VOCAB = DATA / "vocab"
ENCODED = DATA / "encoded"
REPORTS = Path("reports/avazu")

ParamsOpt = typer.Option("params.yaml", "--params", help="params file")


def _load(params_path: str) -> tuple[Params, Layouts]:
    p = load_params(params_path)
    return p, load_layouts(p.avazu.layouts)


def _need_source(a: AvazuParams, source: str, key: str = "avazu.sources") -> None:
    allowed = {"avazu.sources": a.sources, "avazu.split_valid.sources": a.split_valid.sources,
               "avazu.sample.sources": a.sample.sources}[key]
    if source not in allowed:
        raise ConfigError(f"{key}: source '{source}' is not listed ({allowed})")


def source_splits(a: AvazuParams, layouts: Layouts, source: str) -> dict[str, Path]:
    """Where each split of a (base) source lives after normalize / split_valid, resolved from params."""
    norm = NORMALIZED / source
    splits = {s: norm / f"{s}.parquet" for s in layouts[source].splits}
    if source in a.split_valid.sources:
        splits.update(train=SPLIT / source / "train.parquet", valid=SPLIT / source / "valid.parquet")
    return {s: splits[s] for s in ("train", "valid", "test") if s in splits}


def all_datasets(a: AvazuParams, layouts: Layouts) -> dict[str, dict[str, Path]]:
    """Every dataset the vocab stage encodes: the base sources, then their samples."""
    out = {s: source_splits(a, layouts, s) for s in a.sources}
    for s in a.sample.sources:
        out[sample_name(s, a.sample.frac)] = {sp: SAMPLE / s / f"{sp}.parquet" for sp in ("train", "valid")
                                              if sp in out[s]}
    return out


@app.command()
def download(params: str = ParamsOpt) -> None:
    """Fetch x1/x2/x4 (synthetic world, reczoo on Hugging Face, or a local folder) into data/avazu/raw."""
    p, layouts = _load(params)
    a = p.avazu
    with atomic_outputs() as out:
        raw = out.dir(RAW)
        if a.source == "synthetic":
            s = a.synthetic
            manifest = dl.fetch_synthetic(a.sources, layouts, raw, rows=s.rows, seed=p.seed,
                                          mean_ctr=s.mean_ctr, rank=s.rank, temperature=s.temperature)
        elif a.source == "hf":
            manifest = dl.fetch_hf(a.sources, layouts, raw, a.hf_revision)
        else:
            manifest = dl.fetch_local(a.sources, layouts, Path(a.local_dir), raw)
        write_json(raw / "manifest.json", {"source": a.source, "sources": manifest})


@app.command()
def normalize(source: str = typer.Argument(..., help="x1 | x2 | x4"), params: str = ParamsOpt) -> None:
    """One source's published layout -> the unified schema (parquet per split)."""
    p, layouts = _load(params)
    _need_source(p.avazu, source)
    with atomic_outputs() as out:
        d = out.dir(NORMALIZED / source)
        stats = normalize_source(RAW / source, layouts[source], layouts.fields, d, p.avazu.batch_rows)
        write_json(d / "meta.json", {"source": source, "splits": stats})


@app.command("split-valid")
def split_valid(source: str = typer.Argument(..., help="a source without a valid split (x2)"),
                params: str = ParamsOpt) -> None:
    """Seeded, click-stratified share of train becomes valid (reczoo's x2 has none)."""
    p, _ = _load(params)
    a = p.avazu
    _need_source(a, source, "avazu.split_valid.sources")
    src = NORMALIZED / source / "train.parquet"
    mask = stratified_mask(read_labels(src), a.split_valid.frac, p.seed, f"split_valid/{source}")
    with atomic_outputs() as out:
        d = out.dir(SPLIT / source)
        n_valid, n_train = write_subsets(src, mask, d / "valid.parquet", d / "train.parquet", a.batch_rows)
        write_json(d / "meta.json", {"source": source, "frac": a.split_valid.frac,
                                     "rows": {"train": n_train, "valid": n_valid}})


@app.command()
def sample(source: str = typer.Argument(..., help="x1 | x2"), params: str = ParamsOpt) -> None:
    """Seeded, click-stratified ``avazu.sample.frac`` of a source's train and valid splits."""
    p, layouts = _load(params)
    a = p.avazu
    _need_source(a, source, "avazu.sample.sources")
    splits = source_splits(a, layouts, source)
    name = sample_name(source, a.sample.frac)
    rows = {}
    with atomic_outputs() as out:
        d = out.dir(SAMPLE / source)
        for split in ("train", "valid"):
            if split not in splits:
                continue
            mask = stratified_mask(read_labels(splits[split]), a.sample.frac, p.seed, f"sample/{source}/{split}")
            rows[split] = write_subsets(splits[split], mask, d / f"{split}.parquet", None, a.batch_rows)[0]
        write_json(d / "meta.json", {"name": name, "source": source, "frac": a.sample.frac, "rows": rows})


@app.command()
def vocab(params: str = ParamsOpt) -> None:
    """One vocabulary per field over all sources' train splits; int32-encode every split; vocab report."""
    p, layouts = _load(params)
    a = p.avazu
    fields = layouts.feature_fields
    datasets = all_datasets(a, layouts)
    per_source = {}
    for s in a.sources:
        log.info("counting tokens of %s/train", s)
        per_source[s] = vc.count_file(datasets[s]["train"], fields, a.batch_rows)
    counts = vc.merge_counts(list(per_source.values()))
    vocab_ = vc.build_vocab(counts, a.min_count)
    encoder = vc.Encoder(vocab_)
    split_stats = {}
    with atomic_outputs() as out:
        vdir, edir = out.dir(VOCAB), out.dir(ENCODED)
        for name, splits in datasets.items():
            (edir / name).mkdir()
            for split, path in splits.items():
                log.info("encoding %s/%s", name, split)
                split_stats[f"{name}/{split}"] = encoder.encode_file(path, edir / name / f"{split}.parquet",
                                                                     a.batch_rows)
        fmap = vc.feature_map(vocab_, "avazu_" + "_".join(a.sources), a.min_count)
        fmap["datasets"] = {n: sorted(s) for n, s in datasets.items()}
        write_json(vdir / "feature_map.json", fmap)
        vc.vocab_table(vocab_).to_pandas().to_parquet(vdir / "vocab.parquet", index=False)
        synthetic = any("oracle" in st for st in split_stats.values())   # only the synthetic world has one
        report = build_report(a, fields, vocab_, per_source, datasets, split_stats, synthetic)
        write_json(out.file(REPORTS / "vocab.json"), report)
        out.file(REPORTS / "vocab.md").write_text(report_markdown(report), encoding="utf-8")


def _oracle(stats: dict) -> dict:
    if "oracle" not in stats:
        return {}
    y, pr = stats["labels"], stats["oracle"].astype(np.float64)
    if len(np.unique(y)) < 2:
        return {}
    return {"oracle_auc": float(roc_auc_score(y, pr)), "oracle_logloss": float(log_loss(y, pr, labels=[0, 1]))}


def build_report(a: AvazuParams, fields, vocab_, per_source, datasets, split_stats, synthetic: bool) -> dict:
    train_names = [f"{s}/train" for s in a.sources]
    report = {
        "dataset": "avazu (" + ", ".join(a.sources) + ")",
        "synthetic": synthetic,
        "split": "all",
        "protocol": f"FuxiCTR vocabulary (PAD=0, count desc then token, OOV last), min_count={a.min_count}, "
                    f"counted over {', '.join(train_names)}",
        "vocab_size": {"total": int(sum(v.size for v in vocab_.values())),
                       "per_field": {f: vocab_[f].size for f in fields}},
        "splits": {},
    }
    for key, st in split_stats.items():
        total = st["rows"] * len(fields)
        report["splits"][key] = {
            "rows": st["rows"],
            "ctr": st["clicks"] / st["rows"] if st["rows"] else None,
            "oov_rate": sum(st["oov"].values()) / total if total else None,
            "oov_rate_per_field": {f: st["oov"][f] / st["rows"] for f in fields},
            **_oracle(st),
        }
    if "x4" in a.sources and "test" in datasets["x4"]:
        others = [s for s in a.sources if s != "x4"]
        target = vc.count_file(datasets["x4"]["test"], fields, a.batch_rows)
        cross = {"seen_in": " ∪ ".join(f"{s}/train" for s in others) if others else None, "per_field": {}}
        seen = vc.merge_counts([per_source[s] for s in others]) if others else None
        in_domain = per_source["x4"]
        tot = hit = hit_dom = 0
        for f in fields:
            c_dom = vc.coverage(target[f], in_domain[f])
            c_x = vc.coverage(target[f], seen[f]) if seen else {"distinct": None, "occurrence": None}
            cross["per_field"][f] = {"distinct": c_x["distinct"], "occurrence": c_x["occurrence"],
                                     "in_domain_x4_train_occurrence": c_dom["occurrence"]}
            n = target[f].column("count").to_numpy().sum()
            tot += n
            hit += (c_x["occurrence"] or 0) * n
            hit_dom += (c_dom["occurrence"] or 0) * n
        cross["occurrence_all_fields"] = hit / tot if (tot and seen) else None
        cross["in_domain_x4_train_occurrence_all_fields"] = hit_dom / tot if tot else None
        report["overlap_x4_test"] = cross
    return report


def _pct(v) -> str:
    return "n/a" if v is None else f"{100 * v:.1f}%"


def report_markdown(r: dict) -> str:
    lines = [f"# Avazu vocabulary report ({'synthetic' if r['synthetic'] else 'real'} data)", "",
             f"Dataset: {r['dataset']}. Protocol: {r['protocol']}.", ""]
    ov = r.get("overlap_x4_test")
    per_field = r["vocab_size"]["per_field"]
    test_key = "x4/test" if "x4/test" in r["splits"] else None
    head = "| field | vocab size |"
    sep = "|---|---:|"
    if test_key:
        head += " OOV x4/test |"
        sep += "---:|"
    if ov:
        head += f" x4/test tokens seen in {ov['seen_in']} (distinct / occurrence) | seen in x4/train (occurrence) |"
        sep += "---:|---:|"
    lines += [head, sep]
    for f, size in per_field.items():
        row = f"| {f} | {size:,} |"
        if test_key:
            row += f" {_pct(r['splits'][test_key]['oov_rate_per_field'][f])} |"
        if ov:
            pf = ov["per_field"][f]
            row += (f" {_pct(pf['distinct'])} / {_pct(pf['occurrence'])} |"
                    f" {_pct(pf['in_domain_x4_train_occurrence'])} |")
        lines.append(row)
    if ov:
        lines += ["", f"All fields, by occurrence: {_pct(ov['occurrence_all_fields'])} of x4/test tokens were seen in "
                      f"{ov['seen_in']} (vs {_pct(ov['in_domain_x4_train_occurrence_all_fields'])} in x4/train)."]
    lines += ["", "| dataset/split | rows | CTR | OOV rate | oracle AUC | oracle logloss |", "|---|---:|---:|---:|---:|---:|"]
    for key, s in r["splits"].items():
        ctr = f"{s['ctr']:.4f}" if s.get("ctr") is not None else "n/a"
        auc = f"{s['oracle_auc']:.4f}" if "oracle_auc" in s else "n/a"
        ll = f"{s['oracle_logloss']:.4f}" if "oracle_logloss" in s else "n/a"
        lines.append(f"| {key} | {s['rows']:,} | {ctr} | {_pct(s['oov_rate'])} | {auc} | {ll} |")
    return "\n".join(lines) + "\n"
