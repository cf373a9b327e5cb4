"""Thread maps with bounded memory (issue 12)."""

import pytest

from finetune.data.threads import thread_map


def test_results_come_in_order_with_at_most_a_window_of_items_in_flight():
    """Regression (issue 12): ThreadPoolExecutor.map submitted every item at once, ~1.6 kB of
    futures per image, the largest per-image part of a large scan's peak memory."""
    pulled = []

    def items():
        for i in range(1000):
            pulled.append(i)
            yield i

    results = thread_map(lambda i: i * i, items(), window=8, threads=2)
    first = next(results)
    assert first == 0 and len(pulled) <= 8  # not 1000 futures before the first result
    assert [first, *results] == [i * i for i in range(1000)]


def test_an_exception_is_raised_when_its_result_is_reached():
    def fn(i):
        if i == 5:
            raise ValueError("five")
        return i

    results = thread_map(fn, range(10), window=3)
    assert [next(results) for _ in range(5)] == [0, 1, 2, 3, 4]
    with pytest.raises(ValueError, match="five"):
        next(results)
