"""Which part of the seed's recipe moves pretraining? One-at-a-time swaps from ``recdag`` towards ``srt``.

Pretrains ``--size`` on the main DAG's ``--scale`` set (``data/amazon/pretrain``, so run ``dvc repro
amazon_etl`` first) with recdag's recipe and with one part of the srt recipe swapped in at a time: the
architecture (post-LN, oldest-first positions, RecBole init), the negatives (per row, popularity + 1), the
schedule (torch OneCycleLR ending at lr/2.5, cycled β1, no clipping); then the whole srt recipe. Same data,
seed, evaluation users and candidates (paired), every other knob from params.yaml. Test NDCG@5
(sampled_10000) beside the oracle. An analysis, not a speed figure.

    python bench/seqrec_ablation.py --scale 80000 --size 2x64

Output: printed table + bench/out/seqrec_ablation.md (+ .json).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import shutil
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

OUT = Path(__file__).resolve().parent / "out"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--scale", type=int, default=80000)
    ap.add_argument("--size", default="2x64")
    ap.add_argument("--params", default="params.yaml")
    a = ap.parse_args()

    from pipeline.core.params import load_stage
    from pipeline.seqrec import etl
    from pipeline.seqrec import run as rn
    from pipeline.seqrec import study
    from pipeline.seqrec.params import AmazonParams, PretrainParams

    p = load_stage(a.params, ("seed", "amazon", "pretrain"), (AmazonParams, PretrainParams))
    am = p.amazon
    data = Path("data/amazon")
    ds = rn.load_recbole_dataset(data / "pretrain" / etl.pretrain_name(a.scale))
    tok = etl.load_tokenizer(data / "tokenizer" / "tokenizer.json")
    oracle = rn.load_oracle(data / "oracle", ds)
    cfgs = {}
    for recipe in ("recdag", "srt"):
        pt, _ = study.with_recipe(p.pretrain, None, recipe, sizes=[a.size])
        cfgs[recipe] = rn.run_config(pt, size=a.size, max_len=am.max_len, seed=p.seed, run=f"{a.scale}-{a.size}",
                                     data=f"pretrain-{a.scale}")
    rec, srt = cfgs["recdag"], cfgs["srt"]
    variants = {
        "recdag": rec,
        "recdag + srt architecture": dataclasses.replace(rec, arch="srt"),
        "recdag + srt negatives (per row, +1)": dataclasses.replace(rec, negatives="per_row", smoothing=1.0),
        "recdag + srt schedule (OneCycleLR, no clip)": dataclasses.replace(rec, recipe="srt", clip_norm=0.0),
        "srt": srt,
    }
    rows = {}
    for name, cfg in variants.items():
        model, _ = rn.init_model(cfg, ds, tok, am.max_title_tokens, am.max_brand_tokens)
        ck = OUT / "work" / "seqrec_ablation"
        shutil.rmtree(ck, ignore_errors=True)
        t0 = time.time()
        res = rn.train_and_evaluate(cfg, ds, model, checkpoint_dir=ck, tb_dir=None, oracle=oracle)
        shutil.rmtree(ck, ignore_errors=True)
        t = res["metrics"]["test"]
        rows[name] = {"test_ndcg@5": t["ndcg@5"], "oracle_ndcg@5": t.get("oracle_ndcg@5"),
                      "valid_ndcg@5": res["metrics"]["valid"]["ndcg@5"], "best_epoch": res["best_epoch"],
                      "seconds": round(time.time() - t0, 1)}
        print(name, rows[name], flush=True)
    md = [f"Pretraining {a.size} on amazon-pretrain-{a.scale} ({ds.interactions:,} interactions), "
          f"{p.pretrain.epochs} epochs, test NDCG@5 ({rec.protocol}), paired evaluation.", "",
          "| variant | test NDCG@5 | valid NDCG@5 | oracle | best epoch | s |", "|---|---:|---:|---:|---:|---:|"]
    for n, r in rows.items():
        o = r["oracle_ndcg@5"]
        md.append(f"| {n} | {r['test_ndcg@5']:.4f} | {r['valid_ndcg@5']:.4f} | {'' if o is None else f'{o:.4f}'} | "
                  f"{r['best_epoch']} | {r['seconds']} |")
    text = "\n".join(md) + "\n"
    print(text)
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "seqrec_ablation.md").write_text(text, encoding="utf-8")
    (OUT / "seqrec_ablation.json").write_text(json.dumps(rows, indent=1), encoding="utf-8")


if __name__ == "__main__":
    main()
