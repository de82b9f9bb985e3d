"""serving.http.pool: idle connections by key, with an injectable clock."""

from __future__ import annotations

import pytest

from serving.http import ConnectionPool


class Conn:
    def __init__(self, name: str) -> None:
        self.name = name
        self.closed = False

    def close(self) -> None:
        self.closed = True


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_lifo_per_key_and_limits() -> None:
    pool: ConnectionPool[str, Conn] = ConnectionPool(max_idle=2, keepalive_expiry=None)
    a, b, c, other = Conn("a"), Conn("b"), Conn("c"), Conn("other")
    assert pool.put("x", a) and pool.put("x", b) and not pool.put("x", c)
    assert c.closed and pool.put("y", other)
    assert pool.idle("x") == [a, b] and pool.idle_count() == 3
    assert pool.take("x") is b and pool.take("x") is a and pool.take("x") is None
    assert pool.take("y") is other
    assert (pool.stats.stored, pool.stats.reused, pool.stats.full) == (3, 3, 1)


def test_expired_dead_and_unreusable_connections_are_never_handed_out() -> None:
    clock = Clock()
    pool: ConnectionPool[str, Conn] = ConnectionPool(max_idle=8, keepalive_expiry=30.0, clock=clock)
    old, dead, fresh = Conn("old"), Conn("dead"), Conn("fresh")
    pool.put("x", old)
    clock.now += 31
    pool.put("x", dead)
    pool.put("x", fresh)
    dead.closed = True
    out_of_step = Conn("desync")
    assert not pool.put("x", out_of_step, reusable=False) and out_of_step.closed
    assert pool.take("x") is fresh
    assert pool.take("x") is None  # dead skipped, old expired and closed
    assert old.closed
    stats = pool.stats
    assert (stats.expired, stats.dead, stats.not_reusable) == (1, 1, 1)


def test_forget_and_close() -> None:
    pool: ConnectionPool[str, Conn] = ConnectionPool(max_idle=4, keepalive_expiry=None)
    a, b = Conn("a"), Conn("b")
    pool.put("x", a)
    pool.put("x", b)
    pool.forget("x", a)
    pool.forget("x", Conn("never held"))
    assert pool.idle("x") == [b]
    pool.close()
    assert b.closed and pool.idle_count() == 0
    late = Conn("late")
    assert not pool.put("x", late) and late.closed


def test_bad_settings_name_the_field() -> None:
    with pytest.raises(ValueError, match="max_idle"):
        ConnectionPool(max_idle=-1, keepalive_expiry=None)
    with pytest.raises(ValueError, match="keepalive_expiry"):
        ConnectionPool(max_idle=1, keepalive_expiry=0)
