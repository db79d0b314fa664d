"""The per-principal token bucket of the command endpoints."""

from __future__ import annotations

from services.api.limits import RateLimiter


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_a_burst_passes_then_the_next_waits_for_a_refill() -> None:
    clock = Clock()
    limiter = RateLimiter(rate=2.0, burst=3, clock=clock)
    assert [limiter.take("dev-1") for _ in range(3)] == [0.0, 0.0, 0.0]
    assert limiter.take("dev-1") == 0.5
    clock.now = 0.5
    assert limiter.take("dev-1") == 0.0


def test_each_principal_has_its_own_bucket() -> None:
    limiter = RateLimiter(rate=1.0, burst=1, clock=Clock())
    assert limiter.take("dev-1") == 0.0
    assert limiter.take("dev-1") > 0
    assert limiter.take("dev-2") == 0.0


def test_a_stations_day_never_meets_the_default_limit() -> None:
    """300 registrations in a day, even all within one minute, stay under 20/s after 200."""
    clock = Clock()
    limiter = RateLimiter(rate=20.0, burst=200, clock=clock)
    waits = []
    for i in range(300):
        clock.now = i * 0.2  # one every 200 ms: a minute for all of them
        waits.append(limiter.take("station-cam-ranh"))
    assert set(waits) == {0.0}
