"""`recdag clean-checkpoints`: remove the resume points of killed training runs (``models/**/.ckpt/<run>``).

A training stage keeps ``<models>/.ckpt/<stage>-<run key>/`` while it runs and removes it when it ends; a
killed run leaves it behind so the next run resumes from it. A damaged one (a disk that filled up, a file
someone edited) is reported by the stage as a bad checkpoint; this command is the documented way to start
afresh. A folder whose run is still alive (its ``.lock`` is held) is never removed. Not a DVC stage: it
changes no declared output.
"""

from __future__ import annotations

import fcntl
import os
import shutil
from pathlib import Path

import typer

ROOTS = (Path("models"),)


def _held(folder: Path) -> bool:
    lock = folder / ".lock"
    if not lock.is_file():
        return False
    fd = os.open(lock, os.O_RDWR)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)
    return False


def checkpoint_folders(roots=ROOTS) -> list[Path]:
    """Every run folder under a ``.ckpt`` directory below ``roots``."""
    out: list[Path] = []
    for root in roots:
        if root.is_dir():
            for ckpt in sorted(root.rglob(".ckpt")):
                out += sorted(p for p in ckpt.iterdir() if p.is_dir())
    return out


def clean_checkpoints(
    match: str = typer.Argument("", help="only folders whose name contains this (e.g. 'baseline'); all if empty"),
    dry_run: bool = typer.Option(False, "--dry-run", help="list what would be removed"),
) -> None:
    """Remove the resume checkpoints of killed runs (models/**/.ckpt/*), so the next run starts afresh."""
    removed = kept = 0
    for folder in checkpoint_folders():
        if match and match not in folder.name:
            continue
        if _held(folder):
            typer.echo(f"kept {folder} (a run holding it is alive)")
            kept += 1
            continue
        typer.echo(f"{'would remove' if dry_run else 'removed'} {folder}")
        if not dry_run:
            shutil.rmtree(folder)
        removed += 1
    typer.echo(f"clean-checkpoints: {removed} folder(s) {'to remove' if dry_run else 'removed'}, {kept} in use")
