"""The Amazon branch's plots and tables: the scaling curve (test NDCG@5 against pretraining interactions, one
line per model size, the oracle dashed) and fine-tuning scratch vs pretrained (test NDCG@10, full ranking),
from the pretrain / finetune reports (the seed's Figure: NDCG against interactions per model size)."""

from __future__ import annotations

from pathlib import Path


def scaling_rows(reports: dict[tuple[str, int], dict]) -> list[dict]:
    """One row per pretraining run; ``reports[(size, scale)]`` in plotting order (size-major)."""
    rows = []
    for (size, scale), r in reports.items():
        t = r["metrics"]["test"]
        rows.append({"size": size, "scale": scale, "interactions": r["interactions"],
                     "params_total": r["params_total"], "params_non_embedding": r["params_non_embedding"],
                     "test_ndcg@5": t["ndcg@5"], "valid_ndcg@5": r["metrics"]["valid"]["ndcg@5"],
                     "train_ndcg@5": r["metrics"]["train"]["ndcg@5"],
                     "oracle_test_ndcg@5": t.get("oracle_ndcg@5"), "protocol": r["protocol"]})
    return rows


def finetune_rows(reports: dict[str, dict]) -> list[dict]:
    """One row per (dataset, variant) of the fine-tuning reports ``reports[dataset]``."""
    rows = []
    for d, r in reports.items():
        for v, res in r["variants"].items():
            t = res["metrics"]["test"]
            rows.append({"run": f"{d}/{v}", "dataset": d, "variant": v, "test_ndcg@10": t["ndcg@10"],
                         "test_hr@10": t["hr@10"], "test_ndcg@5": t["ndcg@5"], "test_ndcg@20": t["ndcg@20"],
                         "oracle_test_ndcg@10": t.get("oracle_ndcg@10"), "params_total": res["params_total"],
                         "params_non_embedding": res["params_non_embedding"], "protocol": r["protocol"]})
    return rows


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def scaling_png(scaling: list[dict], path: Path) -> None:
    """The scaling curve; the oracle line is the first size's (the oracle does not depend on the model)."""
    plt = _pyplot()
    sizes = list(dict.fromkeys(r["size"] for r in scaling))
    fig, ax = plt.subplots(figsize=(6, 4))
    for size in sizes:
        rows = [r for r in scaling if r["size"] == size]
        ax.plot([r["interactions"] for r in rows], [r["test_ndcg@5"] for r in rows], "o-",
                label=f"{size} ({rows[0]['params_non_embedding']:,} non-emb. params)")
    orc = [r for r in scaling if r["size"] == sizes[0] and r["oracle_test_ndcg@5"] is not None]
    if orc:
        ax.plot([r["interactions"] for r in orc], [r["oracle_test_ndcg@5"] for r in orc], "k--", label="oracle")
    ax.set_xscale("log")
    ax.set_xlabel("pretraining interactions")
    ax.set_ylabel(f"test NDCG@5 ({scaling[0]['protocol']})")
    ax.set_title("Scaling: NDCG vs interactions")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110, format="png")
    plt.close(fig)


def finetune_png(fine: list[dict], path: Path) -> None:
    """Bars of test NDCG@10 per run (grey: scratch, blue: pretrained), the oracle dashed over each."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.bar(range(len(fine)), [r["test_ndcg@10"] for r in fine],
           color=["tab:gray" if r["variant"] == "scratch" else "tab:blue" for r in fine])
    for k, r in enumerate(fine):
        if r["oracle_test_ndcg@10"] is not None:
            ax.plot([k - 0.4, k + 0.4], [r["oracle_test_ndcg@10"]] * 2, "k--")
    ax.set_xticks(range(len(fine)), [r["run"] for r in fine], rotation=20)
    ax.set_ylabel("test NDCG@10 (full_ranking)")
    ax.set_title("Fine-tuning: scratch vs pretrained (dashed: oracle)")
    fig.tight_layout()
    fig.savefig(path, dpi=110, format="png")
    plt.close(fig)


def tables(scaling: list[dict], fine: list[dict]) -> str:
    """The markdown tables of the scaling runs and the fine-tuning runs."""
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
