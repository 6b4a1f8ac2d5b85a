"""Real-data check of the Amazon branch's two fine-tuning recipes (issue 17, item 4).

Fine-tunes from scratch on an S3-Rec text file (``user item1 item2 ...``, e.g. the real ``Beauty.txt`` of
github.com/aHuiWang/CIKM2020-S3Rec) with ``finetune.recipe: srt`` (the release's from-scratch method: InfoNCE
over ``finetune.srt.num_negatives`` per-row popularity(+1) negatives with logQ, post-LN blocks, torch
OneCycleLR, no clipping) and ``recdag`` (pre-LN, ``finetune.loss``, recdag's one-cycle, clipping), through the
same code as the ``amazon_finetune`` stage: id item representation (S3-Rec files carry no text), leave-one-out,
full ranking over the whole catalogue with the user's earlier items masked (S3-Rec's protocol), NDCG@10 and
HR@10 on test, best valid epoch. Every other knob from params.yaml (``pretrain``/``finetune``), the model size
and epochs from the command line. The published reference beside it: S3-Rec (Zhou et al., CIKM 2020) Table 2,
SASRec on Beauty, full ranking: NDCG@10 0.0318, HR@10 0.0605.

    python bench/seqrec_recipes.py --s3rec ../shared/realdata/amazon_s3rec/Beauty.txt --epochs 30

Not a test: pytest does not collect it. Output: printed table + bench/out/seqrec_recipes.md (+ .json).
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


OUT = Path(__file__).resolve().parent / "out"
PUBLISHED = {"ndcg@10": 0.0318, "hr@10": 0.0605}      # S3-Rec paper, Table 2, SASRec on Beauty (full ranking)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--s3rec", required=True, help="an S3-Rec text file, e.g. the real Beauty.txt")
    ap.add_argument("--size", default="2x64", help="'<layers>x<hidden>' (SASRec on Beauty: 2x64)")
    ap.add_argument("--epochs", type=int, default=30)
    ap.add_argument("--patience", type=int, default=5)
    ap.add_argument("--recipes", default="recdag,srt")
    ap.add_argument("--params", default="params.yaml")
    a = ap.parse_args()

    import dataclasses

    from bench.seqrec import s3rec_dataset
    from pipeline.core.params import load_stage
    from pipeline.core.seeding import seed_everything
    from pipeline.seqrec import run as rn
    from pipeline.seqrec import study
    from pipeline.seqrec.params import FinetuneParams, PretrainParams

    p = load_stage(a.params, ("seed", "pretrain", "finetune"), (PretrainParams, FinetuneParams))
    data = s3rec_dataset(OUT / "seqrec_data", Path(a.s3rec))
    ds = rn.load_recbole_dataset(data)
    rows = {}
    for recipe in a.recipes.split(","):
        pt, f = study.with_recipe(p.pretrain, p.finetune, recipe, sizes=[a.size])
        f = dataclasses.replace(f, from_="scratch", item_repr="id", init_size=a.size, epochs=a.epochs,
                                patience=a.patience, mask_history=True, user_frac=1.0)
        cfg = rn.run_config(pt, size=a.size, max_len=50, seed=p.seed, run=ds.name, finetune=f)
        seed_everything(cfg.seed)
        model = rn.make_model(cfg, ds, None, 0)
        ckpt = OUT / "work" / f"seqrec_recipes-{recipe}"
        shutil.rmtree(ckpt, ignore_errors=True)
        t0 = time.time()
        res = rn.train_and_evaluate(cfg, ds, model, checkpoint_dir=ckpt, tb_dir=None, oracle=None)
        shutil.rmtree(ckpt, ignore_errors=True)
        te, va = res["metrics"]["test"], res["metrics"]["valid"]
        rows[recipe] = {"test_ndcg@10": te["ndcg@10"], "test_hr@10": te["hr@10"], "valid_ndcg@10": va["ndcg@10"],
                        "best_epoch": res["best_epoch"], "epochs_run": res["epochs_run"],
                        "seconds": round(time.time() - t0, 1), "loss": cfg.loss, "negatives": cfg.negatives,
                        "num_negatives": cfg.num_negatives, "lr": cfg.lr, "arch": cfg.arch}
        print(recipe, rows[recipe], flush=True)
    md = [f"Real-data check: {Path(a.s3rec).name} ({len(ds.users):,} users, {ds.num_items:,} items, "
          f"{ds.interactions:,} interactions), from scratch, id items, {a.size}, up to {a.epochs} epochs "
          f"(patience {a.patience}); full ranking, earlier items masked, leave-one-out test.", "",
          "| recipe | loss | test NDCG@10 | test HR@10 | valid NDCG@10 | best / run epochs | s |",
          "|---|---|---:|---:|---:|---|---:|"]
    for r, x in rows.items():
        md.append(f"| {r} | {x['loss']} ({x['negatives']}, {x['num_negatives']}) | {x['test_ndcg@10']:.4f} | "
                  f"{x['test_hr@10']:.4f} | {x['valid_ndcg@10']:.4f} | {x['best_epoch']} / {x['epochs_run']} | "
                  f"{x['seconds']} |")
    md.append(f"| S3-Rec paper, SASRec (published) | CE | {PUBLISHED['ndcg@10']:.4f} | {PUBLISHED['hr@10']:.4f} | "
              "– | – | – |")
    text = "\n".join(md) + "\n"
    print(text)
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "seqrec_recipes.md").write_text(text, encoding="utf-8")
    (OUT / "seqrec_recipes.json").write_text(json.dumps({"file": a.s3rec, "rows": rows, "published": PUBLISHED},
                                                        indent=1), encoding="utf-8")


if __name__ == "__main__":
    main()
