"""Read ahead on a background thread, so that parsing the next block overlaps the work on this one.

pyarrow releases the GIL while it parses CSV blocks and reads / decodes parquet row groups, so one thread
reading ahead while the caller validates, encodes and writes (also mostly in pyarrow, without the GIL)
keeps both of the machine's cores busy where a plain loop would use one at a time. Memory stays bounded:
at most ``depth`` items wait in the queue.

Used by the Avazu ETL (``pipeline.ctr.normalize``, ``pipeline.ctr.vocab``); measured by
``bench/avazu_etl.py``.
"""

from __future__ import annotations

import queue
import threading
from typing import Iterable, Iterator, TypeVar

T = TypeVar("T")

_DONE = object()


class _Failed:
    def __init__(self, exc: BaseException):
        self.exc = exc


def prefetch(items: Iterable[T], depth: int = 2) -> Iterator[T]:
    """Yield what ``items`` yields, in order, while a background thread produces up to ``depth`` items
    ahead. An exception raised by ``items`` is re-raised here, at the position it happened (the items
    before it are yielded first). When the consumer stops early (``break``, an exception, ``close()``),
    the producer is told to stop and is joined before this generator finishes; ``items`` is closed on the
    producer's thread if it is a generator."""
    if depth < 1:
        raise ValueError(f"depth must be >= 1, got {depth}")
    q: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def put(item) -> bool:
        while not stop.is_set():
            try:
                q.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def produce() -> None:
        it = iter(items)
        try:
            for item in it:
                if not put(item):
                    return
            put(_DONE)
        except BaseException as e:      # noqa: BLE001 - handed to the consumer, re-raised there
            put(_Failed(e))
        finally:
            close = getattr(it, "close", None)
            if close is not None:
                close()

    worker = threading.Thread(target=produce, name="recdag-prefetch", daemon=True)
    worker.start()
    try:
        while True:
            item = q.get()
            if item is _DONE:
                return
            if isinstance(item, _Failed):
                raise item.exc
            yield item
    finally:
        stop.set()
        while worker.is_alive():             # unblock a producer waiting on a full queue, then join it
            try:
                q.get_nowait()
            except queue.Empty:
                pass
            worker.join(timeout=0.05)
