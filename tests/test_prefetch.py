"""pipeline.core.prefetch: read-ahead on a thread keeps order, re-raises where the error happened, stops."""

from __future__ import annotations

import threading

import pytest

from pipeline.core.prefetch import prefetch


def _threads() -> int:
    return sum(t.name == "recdag-prefetch" for t in threading.enumerate())


def test_yields_every_item_in_order():
    assert list(prefetch(range(1000), depth=3)) == list(range(1000))
    assert list(prefetch([], depth=1)) == []
    assert _threads() == 0


def test_an_error_is_raised_after_the_items_before_it():
    def items():
        yield 1
        yield 2
        raise ValueError("bad row 3")

    got = []
    with pytest.raises(ValueError, match="bad row 3"):
        for x in prefetch(items()):
            got.append(x)
    assert got == [1, 2] and _threads() == 0


def test_stopping_early_stops_and_joins_the_producer_and_closes_the_source():
    closed = threading.Event()
    produced = []

    def items():
        try:
            for i in range(10_000):
                produced.append(i)
                yield i
        finally:
            closed.set()

    gen = prefetch(items(), depth=2)
    assert [next(gen) for _ in range(3)] == [0, 1, 2]
    gen.close()
    assert closed.wait(2) and _threads() == 0
    assert len(produced) <= 3 + 2 + 2          # read ahead by at most the queue depth (+ one in hand)


def test_the_producer_runs_ahead_while_the_consumer_holds_an_item():
    second = threading.Event()

    def items():
        yield 0
        second.set()                            # produced while the consumer still works on item 0
        yield 1

    for x in prefetch(items(), depth=2):
        if x == 0:
            assert second.wait(5), "the next item was not produced while the consumer held the first"


def test_depth_must_be_positive():
    with pytest.raises(ValueError, match="depth"):
        list(prefetch([1], depth=0))
