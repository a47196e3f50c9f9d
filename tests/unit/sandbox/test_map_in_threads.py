"""judge_many's thread fan-out: input order kept, every item once, the first error re-raised."""

from __future__ import annotations

import threading

import pytest

from lorafleet.shared.sandbox.pool import map_in_threads


@pytest.mark.parametrize("workers", [1, 2, 5])
def test_results_in_input_order_each_item_once(workers):
    seen, lock = [], threading.Lock()

    def square(x):
        with lock:
            seen.append(x)
        return x * x

    assert map_in_threads(square, list(range(500)), workers) == [x * x for x in range(500)]
    assert sorted(seen) == list(range(500))


def test_an_error_in_a_worker_reaches_the_caller():
    def boom(x):
        if x == 37:
            raise ValueError("item 37")
        return x

    with pytest.raises(ValueError, match="item 37"):
        map_in_threads(boom, list(range(100)), 3)


def test_uses_the_threads_it_is_given():
    names = set()

    def who(_):
        names.add(threading.current_thread().name)
        threading.Event().wait(0.001)

    map_in_threads(who, list(range(40)), 4)
    assert 1 < len(names) <= 4
