"""Shared plumbing of the benchmarks: one fresh child process per measured thing (so peak RSS belongs to
it alone), its result passed back as one ``RESULT {json}`` line on stdout."""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "bench" / "out"


def peak_rss_mib() -> dict:
    """Peak RSS of this process: ru_maxrss (KiB on Linux) and, where available, VmHWM from /proc."""
    out = {"ru_maxrss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                out["vmhwm_mib"] = int(line.split()[1]) / 1024
    except OSError:
        pass
    return out


def emit(result: dict) -> None:
    """Child side: print the result (with this process's peak RSS) for :func:`run_child`."""
    result.update(peak_rss_mib())
    print("RESULT " + json.dumps(result), flush=True)


def run_child(script: str | Path, *argv: str, python: str | None = None, echo: bool = False) -> dict:
    """Run ``python script --child argv...`` from the repository root; return its ``RESULT`` json.
    ``echo`` streams the child's stderr (its log) through instead of capturing it."""
    cmd = [python or sys.executable, str(Path(script).resolve()), *argv]
    env = dict(os.environ, TQDM_DISABLE="1")      # no progress bars in the children
    proc = subprocess.run(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE,
                          stderr=None if echo else subprocess.PIPE, text=True)
    lines = [line for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
    if proc.returncode != 0 or not lines:
        sys.stderr.write(proc.stdout[-4000:] + (proc.stderr or "")[-4000:])
        raise SystemExit(f"child {' '.join(argv)} failed (exit {proc.returncode})")
    return json.loads(lines[-1][len("RESULT "):])


def fmt_s(s: float) -> str:
    return f"{s:,.1f}" if s >= 10 else f"{s:.2f}"
