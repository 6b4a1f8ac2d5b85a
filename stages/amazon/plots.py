"""Stage amazon_plots: the scaling curve and fine-tuning scratch vs pretrained (DVC plot JSON + PNG)."""

from __future__ import annotations

import logging

from pipeline.core.errors import DataError
from pipeline.core.io import atomic_outputs, read_json, write_json
from stages.amazon.common import REPORTS, ParamsOpt, load, run_name

log = logging.getLogger(__name__)
PLOTS = REPORTS / "plots"


def _read(path):
    if not path.is_file():
        raise DataError(path, "missing report", expected="the output of the pretrain / finetune stage")
    return read_json(path)


def plots(params: str = ParamsOpt) -> None:
    """reports/amazon/plots/{scaling,finetune}.{json,png} and scaling.md (the tables of the closing note)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    p = load(params)
    scaling = []
    for size in p.pretrain.sizes:
        for scale in p.amazon.scales:
            r = _read(REPORTS / "pretrain" / f"{run_name(scale, size)}.json")
            t = r["metrics"]["test"]
            scaling.append({"size": size, "scale": scale, "interactions": r["interactions"],
                            "params_total": r["params_total"], "params_non_embedding": r["params_non_embedding"],
                            "test_ndcg@5": t["ndcg@5"], "valid_ndcg@5": r["metrics"]["valid"]["ndcg@5"],
                            "train_ndcg@5": r["metrics"]["train"]["ndcg@5"],
                            "oracle_test_ndcg@5": t.get("oracle_ndcg@5"), "protocol": r["protocol"]})
    fine = []
    for d in p.amazon.finetune_datasets:
        r = _read(REPORTS / "finetune" / f"{d}.json")
        for v, res in r["variants"].items():
            t = res["metrics"]["test"]
            fine.append({"run": f"{d}/{v}", "dataset": d, "variant": v, "test_ndcg@10": t["ndcg@10"],
                         "test_hr@10": t["hr@10"], "test_ndcg@5": t["ndcg@5"], "test_ndcg@20": t["ndcg@20"],
                         "oracle_test_ndcg@10": t.get("oracle_ndcg@10"), "params_total": res["params_total"],
                         "params_non_embedding": res["params_non_embedding"], "protocol": r["protocol"]})
    with atomic_outputs() as out:
        write_json(out.file(PLOTS / "scaling.json"), scaling)
        write_json(out.file(PLOTS / "finetune.json"), fine)
        fig, ax = plt.subplots(figsize=(6, 4))
        for size in p.pretrain.sizes:
            rows = [r for r in scaling if r["size"] == size]
            ax.plot([r["interactions"] for r in rows], [r["test_ndcg@5"] for r in rows], "o-",
                    label=f"{size} ({rows[0]['params_non_embedding']:,} non-emb. params)")
        orc = [r for r in scaling if r["size"] == p.pretrain.sizes[0] and r["oracle_test_ndcg@5"] is not None]
        if orc:
            ax.plot([r["interactions"] for r in orc], [r["oracle_test_ndcg@5"] for r in orc], "k--", label="oracle")
        ax.set_xscale("log")
        ax.set_xlabel("pretraining interactions")
        ax.set_ylabel(f"test NDCG@5 ({scaling[0]['protocol']})")
        ax.set_title("Scaling: NDCG vs interactions")
        ax.legend(fontsize=8)
        fig.tight_layout()
        fig.savefig(out.file(PLOTS / "scaling.png"), dpi=110, format="png")
        plt.close(fig)
        fig, ax = plt.subplots(figsize=(6, 4))
        labels = [r["run"] for r in fine]
        ax.bar(range(len(fine)), [r["test_ndcg@10"] for r in fine],
               color=["tab:gray" if r["variant"] == "scratch" else "tab:blue" for r in fine])
        for k, r in enumerate(fine):
            if r["oracle_test_ndcg@10"] is not None:
                ax.plot([k - 0.4, k + 0.4], [r["oracle_test_ndcg@10"]] * 2, "k--")
        ax.set_xticks(range(len(fine)), labels, rotation=20)
        ax.set_ylabel("test NDCG@10 (full_ranking)")
        ax.set_title("Fine-tuning: scratch vs pretrained (dashed: oracle)")
        fig.tight_layout()
        fig.savefig(out.file(PLOTS / "finetune.png"), dpi=110, format="png")
        plt.close(fig)
        out.file(PLOTS / "tables.md").write_text(_tables(scaling, fine), encoding="utf-8")


def _tables(scaling, fine) -> str:
    lines = ["| size | interactions | params (total / non-emb.) | train | valid | test NDCG@5 | oracle |",
             "|---|---|---|---|---|---|---|"]
    for r in scaling:
        o = r["oracle_test_ndcg@5"]
        lines.append(f"| {r['size']} | {r['interactions']:,} | {r['params_total']:,} / {r['params_non_embedding']:,} | "
                     f"{r['train_ndcg@5']:.4f} | {r['valid_ndcg@5']:.4f} | {r['test_ndcg@5']:.4f} | "
                     f"{'' if o is None else f'{o:.4f}'} |")
    lines += ["", "| run | test NDCG@5 | NDCG@10 | NDCG@20 | HR@10 | oracle NDCG@10 |", "|---|---|---|---|---|---|"]
    for r in fine:
        o = r["oracle_test_ndcg@10"]
        lines.append(f"| {r['run']} | {r['test_ndcg@5']:.4f} | {r['test_ndcg@10']:.4f} | {r['test_ndcg@20']:.4f} | "
                     f"{r['test_hr@10']:.4f} | {'' if o is None else f'{o:.4f}'} |")
    return "\n".join(lines) + "\n"
