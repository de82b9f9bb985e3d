"""The predict pool's admission: a bounded number of requests and of body bytes, each refusal a 503."""

from __future__ import annotations

import threading

import pytest

from serving.runtimes.errors import ServerBusy
from serving.runtimes.pool import FastPath, PredictPool, default_predict_workers


def test_admission_is_bounded_by_workers_plus_queue_and_frees_on_exit() -> None:
    pool = PredictPool(workers=1, queue=1, max_body_bytes=100)
    with pool.admit(), pool.admit():
        assert pool.requests == 2
        busy = r"2 requests are running or queued \(--predict_workers 1, --predict_queue 1\)"
        with pytest.raises(ServerBusy, match=busy) as caught, pool.admit():
            pass
        assert caught.value.status_code == 503 and caught.value.headers == {"Retry-After": "1"}
    assert pool.requests == 0
    with pool.admit():  # room again
        assert pool.requests == 1


def test_body_bytes_are_reserved_against_the_budget_and_returned() -> None:
    pool = PredictPool(workers=2, queue=0, max_body_bytes=100)
    with pool.admit() as big:
        pool.reserve(big, 60)
        with pool.admit() as other:
            pool.reserve(other, 40)  # exactly the budget
            with pytest.raises(ServerBusy, match=r"hold 100 bytes of bodies \(limit 100\)"):
                pool.reserve(other, 1)
            assert (pool.body_bytes, other.body_bytes) == (100, 40)
        assert pool.body_bytes == 60
    assert pool.body_bytes == 0


async def test_run_executes_on_a_predict_thread() -> None:
    pool = PredictPool(workers=1, queue=0, max_body_bytes=1)
    try:
        name = await pool.run(lambda: threading.current_thread().name)
        assert name.startswith("predict") and name != threading.current_thread().name
    finally:
        pool.shutdown()


def test_bad_sizes_are_refused_and_the_default_is_small() -> None:
    with pytest.raises(ValueError, match="workers >= 1"):
        PredictPool(workers=0, queue=0, max_body_bytes=1)
    assert 1 <= default_predict_workers() <= 4


def test_fast_path_is_earned_by_quick_small_predictions_and_lost_by_a_slow_one() -> None:
    fast = FastPath(small_body=100, quick=0.002, slow=0.1, proof=3)
    assert not fast.allows("m", 10)  # a model's first predictions run on the pool
    for _ in range(3):
        fast.record("m", 10, 0.0001)
    assert fast.allows("m", 10) and not fast.allows("m", 101) and not fast.allows("other", 10)
    fast.record("m", 1000, 5.0)  # a large request may take long: it does not count
    assert fast.allows("m", 10)
    fast.record("m", 10, 0.005)  # not quick: back to the pool until proven again
    assert not fast.allows("m", 10)
    for _ in range(3):
        fast.record("m", 10, 0.0001)
    assert fast.allows("m", 10)
    fast.record("m", 10, 0.5)  # slow: never again
    for _ in range(10):
        fast.record("m", 10, 0.0001)
    assert not fast.allows("m", 10)
