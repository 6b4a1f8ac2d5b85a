"""The vocab report: vocab sizes, OOV rates, oracle figures and the cross-source overlap (JSON + markdown)."""

from __future__ import annotations

import numpy as np
from sklearn.metrics import log_loss, roc_auc_score

from pipeline.ctr import vocab as vc


def _oracle(stats: dict) -> dict:
    if "oracle" not in stats:
        return {}
    y, pr = stats["labels"], stats["oracle"].astype(np.float64)
    if len(np.unique(y)) < 2:
        return {}
    return {"oracle_auc": float(roc_auc_score(y, pr)), "oracle_logloss": float(log_loss(y, pr, labels=[0, 1]))}


def build_vocab_report(a, fields, vocab_, per_source, datasets, split_stats, synthetic: bool,
                       unaligned: dict | None = None) -> dict:
    """``unaligned``: token counts of x1 / x2 train as published (before avazu_align), for the overlap with
    alignment off beside the overlap with it on."""
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
        if not others:
            cross["note"] = ("x4 is the only source: there is no other source's train split to compare x4/test "
                             "with; only x4/train's coverage of x4/test (in-domain) is reported")
        seen = vc.merge_counts([per_source[s] for s in others]) if others else None
        raw = vc.merge_counts([unaligned[s] for s in others]) if (others and unaligned) else None
        if raw is not None:
            cross["seen_in_unaligned"] = " ∪ ".join(f"{s}/train as published" for s in others)
        in_domain = per_source["x4"]
        tot = hit = hit_dom = hit_raw = 0
        for f in fields:
            c_dom = vc.coverage(target[f], in_domain[f])
            c_x = vc.coverage(target[f], seen[f]) if seen else {"distinct": None, "occurrence": None}
            cross["per_field"][f] = {"distinct": c_x["distinct"], "occurrence": c_x["occurrence"],
                                     "in_domain_x4_train_occurrence": c_dom["occurrence"]}
            if raw is not None:
                c_raw = vc.coverage(target[f], raw[f])
                cross["per_field"][f]["unaligned_occurrence"] = c_raw["occurrence"]
                hit_raw += (c_raw["occurrence"] or 0) * target[f].column("count").to_numpy().sum()
            n = target[f].column("count").to_numpy().sum()
            tot += n
            hit += (c_x["occurrence"] or 0) * n
            hit_dom += (c_dom["occurrence"] or 0) * n
        cross["occurrence_all_fields"] = hit / tot if (tot and seen) else None
        cross["in_domain_x4_train_occurrence_all_fields"] = hit_dom / tot if tot else None
        if raw is not None:
            cross["unaligned_occurrence_all_fields"] = hit_raw / tot if tot else None
        report["overlap_x4_test"] = cross
    return report


def _pct(v) -> str:
    return "n/a" if v is None else f"{100 * v:.1f}%"


def vocab_report_markdown(r: dict) -> str:
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
    cross = bool(ov and ov.get("seen_in"))
    if cross:
        head += f" x4/test tokens seen in {ov['seen_in']} (distinct / occurrence) |"
        sep += "---:|"
    if ov:
        head += " x4/test tokens seen in x4/train (occurrence) |"
        sep += "---:|"
    unal = bool(ov and ov.get("seen_in_unaligned"))
    if unal:
        head += " seen without alignment (occurrence) |"
        sep += "---:|"
    lines += [head, sep]
    for f, size in per_field.items():
        row = f"| {f} | {size:,} |"
        if test_key:
            row += f" {_pct(r['splits'][test_key]['oov_rate_per_field'][f])} |"
        if ov:
            pf = ov["per_field"][f]
            if cross:
                row += f" {_pct(pf['distinct'])} / {_pct(pf['occurrence'])} |"
            row += f" {_pct(pf['in_domain_x4_train_occurrence'])} |"
            if unal:
                row += f" {_pct(pf.get('unaligned_occurrence'))} |"
        lines.append(row)
    if ov and not cross:
        lines += ["", f"All fields, by occurrence: {_pct(ov['in_domain_x4_train_occurrence_all_fields'])} of x4/test "
                      f"tokens were seen in x4/train. Cross-source overlap: none to report ({ov['note']})."]
    elif ov:
        lines += ["", f"All fields, by occurrence: {_pct(ov['occurrence_all_fields'])} of x4/test tokens were seen in "
                      f"{ov['seen_in']} (vs {_pct(ov['in_domain_x4_train_occurrence_all_fields'])} in x4/train)"
                      + (f"; without alignment {_pct(ov['unaligned_occurrence_all_fields'])} were seen in "
                         f"{ov['seen_in_unaligned']}." if unal else ".")]
    lines += ["", "| dataset/split | rows | CTR | OOV rate | oracle AUC | oracle logloss |", "|---|---:|---:|---:|---:|---:|"]
    for key, s in r["splits"].items():
        ctr = f"{s['ctr']:.4f}" if s.get("ctr") is not None else "n/a"
        auc = f"{s['oracle_auc']:.4f}" if "oracle_auc" in s else "n/a"
        ll = f"{s['oracle_logloss']:.4f}" if "oracle_logloss" in s else "n/a"
        lines.append(f"| {key} | {s['rows']:,} | {ctr} | {_pct(s['oov_rate'])} | {auc} | {ll} |")
    return "\n".join(lines) + "\n"
