"""Benchmark of the Amazon branch's models.

1. **One pass vs per-negative loop**: the sampled InfoNCE loss (+ backward) of the text-feature model with
   all items embedded in one batched encoder call, against the same loss with every negative embedded by
   its own call (``SeqRecTask.sampled_loss_loop``); same numbers (asserted), time per step.
2. **Our id-based SASRec vs RecBole 1.2.1's SASRec** on a Beauty-sized dataset in RecBole atomic format
   (synthetic by default: 22,363 users, ~12k items, ~199k interactions like real Beauty 5-core; or
   ``--s3rec FILE``, e.g. S3-Rec's real ``Beauty.txt``; or ``--recbole-data DIR`` with
   ``DIR/<name>/<name>.inter``). Same hyperparameters: 2 layers, 2 heads, hidden 64, inner 256, dropout 0.5,
   max length 50, CE over the catalogue, Adam lr 1e-3 (constant, no weight decay), leave-one-out, full
   ranking without history masking (RecBole's full sort for sequential models). Same training pairs: RecBole
   builds one sample per (prefix, next item) and batches 256 of them; ours trains every position of a
   sequence in one causal pass (sequences packed several to a row) and batches the number of sequences that
   carries 256 pairs on average, so both take the same number of optimizer steps over the same pairs per
   epoch. Both train ``--epochs`` epochs, validate (NDCG@10) after each and test the best epoch's weights.
   RecBole runs in a throw-away venv ``bench/out/recbole-venv`` (``recbole==1.2.1 --no-deps`` plus what it
   imports; its pins conflict with current packages; NumPy 2 aliases patched in). ``--unpacked`` also times
   ours with one sequence a row. Reported: seconds per training epoch (validation excluded for both), best
   epoch, valid/test NDCG@10, test HR@10. Target: test NDCG@10 >= RecBole's at <= 0.5x its epoch time.

    python bench/seqrec.py                         # both sections
    python bench/seqrec.py --sections onepass      # section 1 only (seconds)
    python bench/seqrec.py --epochs 1 --users 3000 # quick smoke of section 2
    python bench/seqrec.py --sections recbole --s3rec ../shared/realdata/amazon_s3rec/Beauty.txt --tag beauty

Not a test: pytest does not collect it. Output: printed table + bench/out/seqrec[-tag].md (+ .json).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench import common  # noqa: E402
from bench.common import OUT, emit  # noqa: E402

RECBOLE_VENV = OUT / "recbole-venv"
HP = dict(layers=2, heads=2, dim=64, ffn_mult=4, dropout=0.5, max_len=50, lr=1e-3, batch=256)


# ------------------------------------------------------------------------------------------------ children


def child_onepass(negatives: int, batch: int, steps: int) -> dict:
    import numpy as np
    import torch

    from pipeline.seqrec.model import build_model
    from pipeline.seqrec.train import SeqRecTask

    torch.manual_seed(0)
    n_items, vocab = 20000, 30000
    title = torch.randint(2, vocab, (n_items + 1, 40))
    title[:, 12:] = 0
    brand = torch.randint(2, vocab, (n_items + 1, 8))
    brand[:, 2:] = 0
    m = build_model("text", vocab_size=vocab, title_tokens=title, brand_tokens=brand, dim=64, layers=2, heads=2,
                    ffn_mult=4, max_len=50, dropout=0.0)
    task = SeqRecTask(loss="sampled", num_items=n_items, num_negatives=negatives,
                      popularity=np.arange(n_items + 1, dtype=float), logq=True)
    x = torch.randint(1, n_items + 1, (batch, 51))
    out = {}
    for name, fn in (("one_pass", task.sampled_loss), ("loop", task.sampled_loss_loop)):
        times, losses = [], []
        for s in range(steps + 1):
            torch.manual_seed(s)
            neg = task.draw_negatives()
            t0 = time.perf_counter()
            inp, tgt, mask = task.positions(x)
            loss = fn(m, m(inp)[mask], tgt[mask], neg)
            loss.backward()
            m.zero_grad()
            if s:
                times.append(time.perf_counter() - t0)
            losses.append(float(loss))
        out[name] = {"step_s": float(np.mean(times)), "losses": losses}
    assert np.allclose(out["one_pass"]["losses"], out["loop"]["losses"], rtol=1e-4), "one pass != loop"
    return {"negatives": negatives, "batch": batch, "one_pass_s": out["one_pass"]["step_s"],
            "loop_s": out["loop"]["step_s"], "speedup": out["loop"]["step_s"] / out["one_pass"]["step_s"]}


def cached(d: Path) -> bool:
    """True if the RecBole folder ``d`` was written before; otherwise clear what a broken run left there."""
    if (d / f"{d.name}.inter").is_file():
        return True
    if d.exists():
        import shutil
        shutil.rmtree(d)
    return False


def make_dataset(root: Path, users: int, seed: int) -> Path:
    """A Beauty-sized synthetic set in RecBole atomic format (our ETL's writer), cached."""
    from pipeline.seqrec import etl
    from pipeline.seqrec.params import AmazonSynthetic
    from pipeline.seqrec.synthetic import World

    d = root / f"beauty-syn-{users}"
    if cached(d):
        return d
    raw = root / f"raw-{users}"
    if raw.exists():
        import shutil
        shutil.rmtree(raw)
    raw.mkdir(parents=True)
    cfg = AmazonSynthetic(pool_users=10, beauty_users=users, sports_users=10, items_per_cluster=1500,
                          clusters_per_category=8, mean_length=8.9, stay=0.6, concentration=0.3, missing_meta=0.0,
                          short_users=0.0)
    World(cfg, seed).write(raw)
    seqs = etl.read_finetune("reviews", raw / "finetune" / "beauty.json", "beauty")
    etl.write_finetune(seqs, None, d, d.name, 5)
    return d


def s3rec_dataset(root: Path, path: Path) -> Path:
    """An S3-Rec text file (``user item1 item2 ...`` per line, chronological; e.g. the real ``Beauty.txt``)
    as a RecBole atomic folder (our ETL's reader and writer; timestamps = order), cached by name."""
    from pipeline.seqrec import etl

    d = root / f"s3rec-{path.stem.lower()}"
    if cached(d):
        return d
    etl.write_finetune(etl.read_finetune("s3rec", path, d.name), None, d, d.name, 5)
    return d


def child_ours(data: Path, epochs: int, pack: bool = True) -> dict:
    """Our id-based SASRec through the one training loop, RecBole's recipe: constant-lr Adam (no decay, no
    clipping), valid NDCG@10 after every epoch, the best epoch's weights tested. A batch holds the number of
    sequences that carries ``HP['batch']`` (prefix, next item) pairs on average, so an epoch has as many
    optimizer steps, of as many training pairs, as RecBole's (whose batch is 256 prefixes)."""
    import tempfile

    import torch
    import torch.optim

    from pipeline.core.train import LoopConfig, Trainer
    from pipeline.seqrec.model import build_model
    from pipeline.seqrec.run import load_recbole_dataset
    from pipeline.seqrec.train import SeqRecTask, eval_split, pack_sequences

    torch.manual_seed(0)
    ds = load_recbole_dataset(data)
    m = build_model("id", num_items=ds.num_items, dim=HP["dim"], layers=HP["layers"], heads=HP["heads"],
                    ffn_mult=HP["ffn_mult"], max_len=HP["max_len"], dropout=HP["dropout"])
    train = pack_sequences([s[:-2] for s in ds.seqs], HP["max_len"])
    pairs = int(SeqRecTask.positions(train.x)[2].sum())         # (prefix, next item) pairs, as the loss trains
    batch = max(1, round(HP["batch"] * len(train) / pairs))
    task = SeqRecTask(loss="ce", num_items=ds.num_items, mask_history=False, monitor="ndcg@10", pack=pack)
    valid, test = (eval_split(ds.seqs, s, HP["max_len"]) for s in ("valid", "test"))

    class Plain:                                   # RecBole's recipe: constant-lr Adam, no clipping
        def __init__(self):
            self.optimizer = torch.optim.Adam(m.parameters(), lr=HP["lr"])

        def step(self, x, closure):
            self.optimizer.zero_grad(set_to_none=True)
            loss = closure()
            self.optimizer.step()
            return loss

        def state_dict(self):
            return self.optimizer.state_dict()

        def load_state_dict(self, s):
            self.optimizer.load_state_dict(s)

    with tempfile.TemporaryDirectory() as ck:
        tr = Trainer(m, Plain(), LoopConfig(epochs=epochs, batch_size=batch, lr_decay=1.0, patience=epochs + 1,
                                            seed=0), embedding_params=[], checkpoint_dir=Path(ck), task=task)
        eval_s, on_eval = [0.0], tr._on_eval

        def timed_eval(*a, **k):                   # validation is not training time (nor is it in RecBole's)
            t = time.perf_counter()
            on_eval(*a, **k)
            eval_s[0] += time.perf_counter() - t

        tr._on_eval = timed_eval
        t0 = time.perf_counter()
        st = tr.fit(train, valid, resume=False)
        total = time.perf_counter() - t0
    t = task.evaluate_model(m, test)
    return {"impl": "ours" if pack else "ours, one sequence a row", "epoch_s": (total - eval_s[0]) / st.epoch, "epochs": st.epoch,
            "best_epoch": st.best_epoch, "valid_ndcg@10": st.best, "test_ndcg@10": t["ndcg@10"],
            "test_hr@10": t["hr@10"], "users": len(ds.users), "items": ds.num_items,
            "interactions": ds.interactions, "train_rows": pairs, "batch_sequences": batch,
            "steps_per_epoch": -(-len(train) // batch),
            "valid_curve": [round(h["valid_ndcg@10"], 5) for h in st.history]}


RECBOLE_SCRIPT = r'''
import json, sys, time
import numpy as np
# recbole 1.2.1's Config.compatibility_settings() aliases np.float = np.float_ etc.; NumPy 2 removed the
# underscored names, so give them back (aliases only; no behaviour changes)
for old, new in (("float_", "float64"), ("complex_", "complex128"), ("unicode_", "str_")):
    if not hasattr(np, old):
        setattr(np, old, getattr(np, new))
from recbole.config import Config
from recbole.data import create_dataset, data_preparation
from recbole.model.sequential_recommender import SASRec
from recbole.trainer import Trainer
from recbole.utils import init_seed
data_path, name, epochs = sys.argv[1], sys.argv[2], int(sys.argv[3])
cfg = {"data_path": data_path, "dataset": name, "USER_ID_FIELD": "user_id", "ITEM_ID_FIELD": "item_id",
       "TIME_FIELD": "timestamp", "load_col": {"inter": ["user_id", "item_id", "timestamp"]},
       "n_layers": 2, "n_heads": 2, "hidden_size": 64, "inner_size": 256, "hidden_dropout_prob": 0.5,
       "attn_dropout_prob": 0.5, "hidden_act": "gelu", "layer_norm_eps": 1e-12, "initializer_range": 0.02,
       "MAX_ITEM_LIST_LENGTH": 50, "loss_type": "CE", "train_neg_sample_args": None, "learning_rate": 1e-3,
       "train_batch_size": 256, "eval_batch_size": 256, "epochs": epochs, "eval_step": 0, "stopping_step": 99,
       "eval_args": {"split": {"LS": "valid_and_test"}, "order": "TO", "mode": "full", "group_by": "user"},
       "metrics": ["NDCG", "Hit"], "topk": [10], "valid_metric": "NDCG@10", "device": "cpu", "use_gpu": False,
       "show_progress": False, "seed": 2020, "reproducibility": True, "checkpoint_dir": sys.argv[4]}
config = Config(model=SASRec, config_dict=cfg)
init_seed(config["seed"], config["reproducibility"])
dataset = create_dataset(config)
train, valid, test = data_preparation(config, dataset)
model = SASRec(config, train.dataset).to(config["device"])
trainer = Trainer(config, model)
import copy
times, curve, best, best_state, best_epoch = [], [], -1.0, None, 0
for e in range(epochs):
    t0 = time.perf_counter()
    trainer._train_epoch(train, e, show_progress=False)
    times.append(time.perf_counter() - t0)
    score, _ = trainer._valid_epoch(valid, show_progress=False)     # valid NDCG@10, full ranking
    curve.append(round(float(score), 5))
    if score > best:
        best, best_state, best_epoch = float(score), copy.deepcopy(model.state_dict()), e + 1
model.load_state_dict(best_state)
res = trainer.evaluate(test, load_best_model=False, show_progress=False)
print("RESULT " + json.dumps({"impl": "recbole-1.2.1", "epoch_s": sum(times) / len(times), "epochs": epochs,
      "best_epoch": best_epoch, "valid_ndcg@10": best, "test_ndcg@10": float(res["ndcg@10"]),
      "test_hr@10": float(res["hit@10"]), "train_rows": len(train.dataset), "batch_sequences": 256,
      "steps_per_epoch": len(train), "valid_curve": curve}))
'''


def recbole_venv() -> tuple[str | None, str]:
    """Create the throw-away venv; returns (python, log). recbole 1.2.1 pins old numpy/scipy/torch ranges:
    install it --no-deps into a venv that reuses this one's torch (system site packages) + its imports."""
    py = RECBOLE_VENV / "bin" / "python"
    if py.is_file():
        return str(py), "cached"
    log = []
    r = subprocess.run([sys.executable, "-m", "venv", str(RECBOLE_VENV)], capture_output=True, text=True)
    if r.returncode:
        return None, r.stderr[-400:]
    import site
    import sysconfig
    # reuse this venv's torch/numpy/scipy/sklearn/pandas: a .pth pointing at its site-packages
    # (--system-site-packages would expose the base interpreter's, not this venv's)
    target = Path(subprocess.check_output([str(py), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                                          text=True).strip())
    (target / "recdag_parent.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    del site
    for cmd in (
                [str(py), "-m", "pip", "install", "-q", "--no-deps", "recbole==1.2.1"],
                [str(py), "-m", "pip", "install", "-q", "colorlog", "colorama", "texttable", "tensorboard",
                 "thop", "tabulate", "plotly", "psutil", "ray[tune]<2.10"]):
        r = subprocess.run(cmd, capture_output=True, text=True)
        log.append(f"$ {' '.join(cmd[-3:])}: exit {r.returncode} {r.stderr[-400:]}")
        if r.returncode != 0 and "ray" not in cmd[-1]:
            return None, "\n".join(log)
    return str(py), "\n".join(log)


def child_recbole(data: Path, epochs: int) -> dict:
    py, log = recbole_venv()
    if py is None:
        return {"impl": "recbole-1.2.1", "error": "install failed", "log": log}
    script = OUT / "recbole_sasrec.py"
    script.write_text(RECBOLE_SCRIPT)
    r = subprocess.run([py, str(script), str(data.resolve().parent), data.name, str(epochs), str(OUT / "recbole-ckpt")],
                       capture_output=True, text=True, cwd=OUT)      # its log/ and log_tensorboard/ land there
    lines = [ln for ln in r.stdout.splitlines() if ln.startswith("RESULT ")]
    if r.returncode or not lines:
        return {"impl": "recbole-1.2.1", "error": f"exit {r.returncode}", "log": (r.stderr or r.stdout)[-1500:]}
    import resource
    out = json.loads(lines[-1][7:])
    out["process_rss_mib"] = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024   # RecBole's process
    return out


# ------------------------------------------------------------------------------------------------ parent


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--child")
    ap.add_argument("--sections", nargs="+", default=["onepass", "recbole"])
    ap.add_argument("--negatives", type=int, nargs="+", default=[128, 512])
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--users", type=int, default=22363)
    ap.add_argument("--epochs", type=int, default=8)
    ap.add_argument("--recbole-data", default="", help="a RecBole folder DIR/<name>/<name>.inter instead")
    ap.add_argument("--s3rec", default="", help="an S3-Rec text file (e.g. the real Beauty.txt) instead")
    ap.add_argument("--unpacked", action="store_true", help="also time ours with one sequence a row")
    ap.add_argument("--unpacked-epochs", type=int, default=2, help="epochs of that run (it is there for its time)")
    ap.add_argument("--tag", default="", help="output bench/out/seqrec-<tag>.md instead of seqrec.md")
    ap.add_argument("--arg", nargs="*", default=[])
    a = ap.parse_args()
    if a.child == "onepass":
        emit(child_onepass(int(a.arg[0]), int(a.arg[1]), int(a.arg[2])))
        return
    if a.child == "ours":
        emit(child_ours(Path(a.arg[0]), int(a.arg[1]), pack=a.arg[2] == "1"))
        return
    if a.child == "recbole":
        emit(child_recbole(Path(a.arg[0]), int(a.arg[1])))
        return
    OUT.mkdir(parents=True, exist_ok=True)
    results, md = {}, ["# bench/seqrec.py", ""]
    if "onepass" in a.sections:
        rows = [common.run_child(__file__, "--child", "onepass", "--arg", str(k), "64", str(a.steps))
                for k in a.negatives]
        results["onepass"] = rows
        md += ["## One batched pass vs per-negative loop (text model, batch 64 x 50 positions, 2x64)", "",
               "| negatives | one pass s/step | loop s/step | speed-up |", "|---|---|---|---|"]
        md += [f"| {r['negatives']} | {r['one_pass_s']:.3f} | {r['loop_s']:.3f} | {r['speedup']:.1f}x |" for r in rows]
        md.append("")
    if "recbole" in a.sections:
        if a.s3rec:
            data = s3rec_dataset(OUT / "seqrec_data", Path(a.s3rec))
        else:
            data = Path(a.recbole_data) if a.recbole_data else make_dataset(OUT / "seqrec_data", a.users, 2024)
        rows = [common.run_child(__file__, "--child", "ours", "--arg", str(data), str(a.epochs), "1")]
        if a.unpacked:
            rows.append(common.run_child(__file__, "--child", "ours", "--arg", str(data), str(a.unpacked_epochs), "0"))
        rows.append(common.run_child(__file__, "--child", "recbole", "--arg", str(data), str(a.epochs)))
        results["recbole"] = rows
        ref = rows[-1] if "error" not in rows[-1] else None
        md += [f"## SASRec (2 layers, 2 heads, hidden 64, inner 256, dropout 0.5, len 50, CE, Adam 1e-3) on "
               f"{data.name}: {a.epochs} epochs, best valid epoch tested, full ranking", "",
               "| implementation | training pairs | batch | steps / epoch | s / epoch | vs RecBole | best epoch | "
               "valid NDCG@10 | test NDCG@10 | test HR@10 | peak RSS MiB |", "|---|---|---|---|---|---|---|---|---|---|---|"]
        for r in rows:
            if "error" in r:
                md.append(f"| {r['impl']} | failed: {r['error']} | | | | | | | | | |")
                md += ["", "```", r.get("log", ""), "```"]
                continue
            ratio = f"{r['epoch_s'] / ref['epoch_s']:.3f}x" if ref else "n/a"
            unit = "prefixes" if r["impl"] == "recbole-1.2.1" else "sequences"
            md.append(f"| {r['impl']} | {r['train_rows']:,} | {r['batch_sequences']} {unit} | {r['steps_per_epoch']} | "
                      f"{r['epoch_s']:.1f} | {ratio} | {r['best_epoch']}/{r['epochs']} | {r['valid_ndcg@10']:.4f} | "
                      f"{r['test_ndcg@10']:.4f} | {r['test_hr@10']:.4f} | "
                      f"{r.get('process_rss_mib', r.get('ru_maxrss_mib', 0)):.0f} |")
        md += ["", "valid NDCG@10 by epoch: " + "; ".join(f"{r['impl']} {r.get('valid_curve')}" for r in rows), ""]
        if ref and "error" not in rows[0]:
            o = rows[0]
            met = o["test_ndcg@10"] >= ref["test_ndcg@10"] and o["epoch_s"] <= 0.5 * ref["epoch_s"]
            md += [f"Target (test NDCG@10 >= RecBole's at <= 0.5x its epoch time): {'met' if met else 'NOT met'} "
                   f"(NDCG@10 {o['test_ndcg@10']:.4f} vs {ref['test_ndcg@10']:.4f}, epoch time "
                   f"{o['epoch_s'] / ref['epoch_s']:.3f}x).", ""]
    text = "\n".join(md)
    print(text)
    tag = f"-{a.tag}" if a.tag else ""
    (OUT / f"seqrec{tag}.md").write_text(text + "\n")
    (OUT / f"seqrec{tag}.json").write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
