"""utils.ttl_cache.TtlCache: a value is served only before its own expiry."""

from __future__ import annotations

from utils.ttl_cache import TtlCache


class Clock:
    """A monotonic clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_a_value_is_served_until_its_ttl_has_passed() -> None:
    clock = Clock()
    cache = TtlCache(clock=clock)
    cache.put("site", "libraries", 300)
    clock.now += 299.9
    assert cache.get("site") == "libraries"
    clock.now += 0.1
    assert cache.get("site") is None


def test_each_value_keeps_its_own_ttl() -> None:
    clock = Clock()
    cache = TtlCache(clock=clock)
    cache.put("short", 1, 10)
    cache.put("long", 2, 600)
    clock.now += 60
    assert (cache.get("short"), cache.get("long")) == (None, 2)


def test_a_ttl_of_zero_keeps_nothing_and_forgets_the_earlier_value() -> None:
    cache = TtlCache(clock=Clock())
    cache.put("site", "old", 300)
    cache.put("site", "new", 0)
    assert cache.get("site") is None and len(cache) == 0


def test_expired_values_are_dropped_when_another_is_stored() -> None:
    clock = Clock()
    cache = TtlCache(clock=clock)
    for n in range(100):
        cache.put(("site", n), n, 5)
    clock.now += 5
    cache.put("fresh", "x", 5)
    assert len(cache) == 1
