"""Exit check of ``recdag avazu normalize``: run the stage many times, each in a fresh process, and count
the runs that fail *after* their work is done (the process aborting at interpreter exit).

Why: about 1 % of ``avazu_normalize@x4`` runs used to die at exit with ``terminate called without an active
exception`` / ``Fatal Python error: Aborted`` after the outputs were committed, so DVC marked the stage as
failed. The cause was a Python callable (the CSV reader's ``invalid_row_handler``) owned by pyarrow's C++
streaming reader: the last reference to that reader can be dropped by one of pyarrow's worker threads, and
when that happens while the interpreter is finalising, the worker's GIL request ends the thread with
``pthread_exit`` inside a ``noexcept`` destructor -> ``std::terminate``. A race, so only many runs show it.

What it does:

1. copies the project's code (``pipeline/``, ``stages/``, ``conf/``, ``params.yaml``) into a scratch
   directory (a temp dir, or ``--workdir``), sets ``avazu.synthetic.rows`` there (``--rows``; smaller =
   faster runs and a larger share of the run spent near exit), and builds the raw input once with
   ``recdag avazu download`` (the synthetic source; the repository's own ``data/`` is never touched);
2. runs ``recdag avazu normalize <source>`` ``--runs`` times, ``--jobs`` at a time, each in a fresh process
   (``nice``-d), every job in its own folder (code and raw input shared, outputs private), with
   ``PYTHONFAULTHANDLER=1`` so an abort prints the Python stacks of all threads;
3. prints the clean / failed counts, the exit codes, whether each failed run had already committed its
   outputs (``meta.json`` present: the failure happened at exit), the stderr tail of every failure, and
   the wall time; exits 1 if any run failed, 2 if the setup itself failed.

Usage (from the repository root, in its venv)::

    python bench/normalize_exit_check.py                      # 500 runs, 40k synthetic rows, 1 job
    python bench/normalize_exit_check.py --runs 200 --jobs 2 --rows 400000
    python bench/normalize_exit_check.py --repo /tmp/patched-copy   # check a patched copy of the code

Nothing in the repository is modified; the scratch directory is removed at the end unless ``--keep`` (or
``--workdir``) is given.
"""

from __future__ import annotations

import argparse
import concurrent.futures as cf
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
CODE = ("pipeline", "stages", "conf", "params.yaml")   # what a stage needs besides its data
RAW = Path("data/avazu/raw")
NORMALIZED = Path("data/avazu/interim/base/normalized")
EXIT_MARKERS = ("terminate called", "Fatal Python error", "Aborted", "Segmentation fault")


@dataclass
class Run:
    index: int
    rc: int
    seconds: float
    stderr: str
    committed: bool          # the stage's outputs (meta.json) were in place when the process ended

    @property
    def ok(self) -> bool:
        return self.rc == 0

    @property
    def exit_noise(self) -> bool:
        """A clean exit code, but the stderr of an abort (should never happen; reported if it does)."""
        return self.rc == 0 and any(m in self.stderr for m in EXIT_MARKERS)


def rc_text(rc: int) -> str:
    if rc < 0:
        try:
            return f"{rc} ({signal.Signals(-rc).name})"
        except ValueError:
            return str(rc)
    return str(rc)


def tail(text: str, lines: int) -> str:
    return "\n".join(text.rstrip().splitlines()[-lines:])


# --------------------------------------------------------------------------------------------- setup --

def set_rows(params: Path, rows: int) -> None:
    """Set ``avazu.synthetic.rows`` (and ``avazu.source: synthetic``) in place, keeping the file's comments
    (a line edit inside the ``avazu:`` section), then check the result with a YAML parse."""
    lines = params.read_text(encoding="utf-8").splitlines(keepends=True)
    section: list[str] = []                     # the chain of keys leading to the current line
    done = {"rows": False, "source": False}
    for i, line in enumerate(lines):
        m = re.match(r"^(\s*)([A-Za-z_][\w-]*):(.*)$", line)
        if not m or line.lstrip().startswith("#"):
            continue
        depth = len(m[1]) // 2
        section = section[:depth] + [m[2]]
        if section == ["avazu", "synthetic", "rows"] and rows:
            lines[i] = re.sub(r"^(\s*rows:\s*)[0-9_]+", rf"\g<1>{rows}", line)
            done["rows"] = True
        elif section == ["avazu", "source"]:
            lines[i] = re.sub(r"^(\s*source:\s*)\S+", r"\g<1>synthetic", line)
            done["source"] = True
    params.write_text("".join(lines), encoding="utf-8")
    a = yaml.safe_load(params.read_text(encoding="utf-8"))["avazu"]
    if a["source"] != "synthetic" or (rows and a["synthetic"]["rows"] != rows) or not done["source"]:
        raise SystemExit(f"setup: could not set avazu.source / avazu.synthetic.rows in {params}")


def recdag_command() -> list[str]:
    """The ``recdag`` console script of this interpreter's environment (what DVC runs), else the module."""
    script = Path(sys.executable).with_name("recdag")
    return [str(script)] if script.is_file() else [sys.executable, "-m", "stages.cli"]


def stage_env(code_root: Path, faulthandler: bool) -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(code_root) + os.pathsep + env.get("PYTHONPATH", "") if env.get("PYTHONPATH") \
        else str(code_root)
    env.pop("PYTHONFAULTHANDLER", None)
    if faulthandler:
        env["PYTHONFAULTHANDLER"] = "1"
    return env


def check_imports(code_root: Path, cwd: Path, env: dict) -> None:
    """The stage must run the scratch copy of the code, not the repository's installed one."""
    out = subprocess.run([sys.executable, "-c", "import pipeline, stages.cli; print(pipeline.__file__)"],
                         cwd=cwd, env=env, capture_output=True, text=True)
    where = Path(out.stdout.strip() or "?").resolve()
    if out.returncode or code_root.resolve() not in where.parents:
        raise SystemExit(f"setup: the stage would import {where}, not the copy in {code_root}\n{out.stderr}")


def build_project(repo: Path, root: Path, rows: int, jobs: int, env: dict, nice: int) -> list[Path]:
    """Copy the code to ``root``, build the raw input there once; one job folder per parallel worker."""
    for name in CODE:
        src = repo / name
        if not src.exists():
            raise SystemExit(f"setup: {src} not found (is --repo the project root?)")
        if src.is_dir():
            shutil.copytree(src, root / name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        else:
            shutil.copy2(src, root / name)
    set_rows(root / "params.yaml", rows)
    check_imports(root, root, env)
    t0 = time.perf_counter()
    dl = subprocess.run(["nice", "-n", str(nice), *recdag_command(), "avazu", "download"], cwd=root, env=env,
                        capture_output=True, text=True)
    if dl.returncode:
        raise SystemExit(f"setup: `recdag avazu download` failed (rc {dl.returncode}):\n{tail(dl.stderr, 30)}")
    print(f"raw input built in {time.perf_counter() - t0:.1f}s: {root / RAW}", flush=True)
    workers = []
    for k in range(jobs):                     # private outputs; code, params and raw input are links
        w = root / f"job{k}"
        (w / RAW.parent).mkdir(parents=True)
        for name in ("conf", "params.yaml"):
            (w / name).symlink_to(root / name)
        (w / RAW).symlink_to(root / RAW, target_is_directory=True)
        workers.append(w)
    return workers


# ---------------------------------------------------------------------------------------------- runs --

def run_once(index: int, cwd: Path, source: str, env: dict, nice: int, timeout: float) -> Run:
    meta = cwd / NORMALIZED / source / "meta.json"
    if meta.exists():
        meta.unlink()
    t0 = time.perf_counter()
    try:
        p = subprocess.run(["nice", "-n", str(nice), *recdag_command(), "avazu", "normalize", source],
                           cwd=cwd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                           errors="replace", timeout=timeout)
        rc, err = p.returncode, p.stderr
    except subprocess.TimeoutExpired as e:
        rc, err = 124, (e.stderr.decode(errors="replace") if isinstance(e.stderr, bytes) else e.stderr or "") \
            + f"\n[timed out after {timeout:.0f}s]"
    return Run(index, rc, time.perf_counter() - t0, err, meta.is_file())


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=500, help="stage runs, each a fresh process (default 500)")
    ap.add_argument("--rows", type=int, default=40000,
                    help="avazu.synthetic.rows of the scratch project (default 40000; 0 = params.yaml's)")
    ap.add_argument("--source", default="x4", help="which layout to normalize (default x4)")
    ap.add_argument("--jobs", type=int, default=1, help="runs at a time (default 1)")
    ap.add_argument("--nice", type=int, default=10, help="nice level of every process (default 10)")
    ap.add_argument("--repo", type=Path, default=REPO, help="project whose code is checked (default: this one)")
    ap.add_argument("--workdir", type=Path, help="scratch directory to use and keep (default: a temp dir)")
    ap.add_argument("--keep", action="store_true", help="keep the temp scratch directory")
    ap.add_argument("--timeout", type=float, default=300, help="seconds before one run counts as hung")
    ap.add_argument("--no-faulthandler", dest="faulthandler", action="store_false",
                    help="do not set PYTHONFAULTHANDLER=1 in the runs")
    ap.add_argument("--show", type=int, default=10, help="failures whose stderr tail is printed (default 10)")
    ap.add_argument("--tail", type=int, default=25, help="stderr lines per failure (default 25)")
    args = ap.parse_args(argv)
    if args.runs < 1 or args.jobs < 1:
        ap.error("--runs and --jobs must be >= 1")

    if args.workdir:
        root = args.workdir.resolve()
        if root.exists() and any(root.iterdir()):
            ap.error(f"--workdir {root} is not empty")
        root.mkdir(parents=True, exist_ok=True)
    else:
        root = Path(tempfile.mkdtemp(prefix="normalize_exit_check-"))
    env = stage_env(root, args.faulthandler)
    print(f"scratch project: {root} (code from {args.repo.resolve()}, rows={args.rows or 'params.yaml'}, "
          f"python {sys.version.split()[0]})", flush=True)
    try:
        workers = build_project(args.repo.resolve(), root, args.rows, args.jobs, env, args.nice)
        free: list[Path] = list(workers)
        lock = threading.Lock()

        def task(i: int) -> Run:
            with lock:
                w = free.pop()
            try:
                return run_once(i, w, args.source, env, args.nice, args.timeout)
            finally:
                with lock:
                    free.append(w)

        runs: list[Run] = []
        t0 = time.perf_counter()
        step = max(1, args.runs // 20)
        with cf.ThreadPoolExecutor(args.jobs) as pool:
            for r in pool.map(task, range(1, args.runs + 1)):
                runs.append(r)
                if not r.ok:
                    print(f"  run {r.index}: FAILED rc {rc_text(r.rc)}, outputs committed: {r.committed}",
                          flush=True)
                if len(runs) % step == 0 or len(runs) == args.runs:
                    bad = sum(not x.ok for x in runs)
                    print(f"  {len(runs)}/{args.runs} runs, {bad} failed, {time.perf_counter() - t0:.0f}s",
                          flush=True)
        wall = time.perf_counter() - t0
    finally:
        if not (args.keep or args.workdir):
            shutil.rmtree(root, ignore_errors=True)

    failed = [r for r in runs if not r.ok]
    noisy = [r for r in runs if r.exit_noise]
    codes: dict[str, int] = {}
    for r in failed:
        codes[rc_text(r.rc)] = codes.get(rc_text(r.rc), 0) + 1
    print()
    print(f"normalize {args.source}: {len(runs)} runs, {len(runs) - len(failed)} clean, {len(failed)} failed "
          f"({100 * len(failed) / len(runs):.2f} %); wall {wall:.0f}s "
          f"({sum(r.seconds for r in runs) / len(runs):.2f}s per run, {args.jobs} at a time)")
    if failed:
        print("exit codes: " + ", ".join(f"{c} x{n}" for c, n in sorted(codes.items())))
        print(f"failed after committing their outputs: {sum(r.committed for r in failed)} of {len(failed)}")
        for r in failed[:args.show]:
            print(f"\n--- run {r.index}: rc {rc_text(r.rc)}, {r.seconds:.2f}s, outputs committed: {r.committed}")
            print(tail(r.stderr, args.tail) or "(no stderr)")
        if len(failed) > args.show:
            print(f"\n({len(failed) - args.show} more failures not shown; --show N)")
    if noisy:
        print(f"\n{len(noisy)} clean run(s) printed abort messages anyway; first (run {noisy[0].index}):")
        print(tail(noisy[0].stderr, args.tail))
    return 1 if failed or noisy else 0


if __name__ == "__main__":
    sys.exit(main())
