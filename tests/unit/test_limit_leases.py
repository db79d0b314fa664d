"""CommandLimit's leases in memory (pure logic; the shared bucket itself is tested on both
stores in tests/integration/test_limits.py)."""

from __future__ import annotations

from typing import Any

from services.api.limits import CommandLimit


class Bucket:
    """A shared bucket that always has tokens: each lease gets the lot asked for."""

    def __init__(self) -> None:
        self.taken = 0

    def lease(self, principal_id: str, rate: float, burst: int, lot: int) -> tuple[int, float]:
        self.taken += lot
        return lot, 0.0


def test_concurrent_leases_keep_each_others_tokens() -> None:
    """Two commands find the lot spent at once and both lease: every token taken from the
    shared bucket is spendable here, none is overwritten and lost."""
    now = [100.0]
    bucket = Bucket()
    limit = CommandLimit(bucket, 20.0, 200, clock=lambda: now[0])  # type: ignore[arg-type]
    limit._leases["p"] = (0, now[0] + 0.5, 8)  # the last lot of 8, spent in time
    assert limit.lease("p") == 0 and limit.lease("p") == 0  # lots of 16 and 20: one spent each
    spent = 0
    while limit.spend("p"):
        spent += 1
    assert bucket.taken == 36 and spent == 34  # before the fix: 19 (the first lot's 15 lost)


def test_unspent_tokens_expire() -> None:
    now = [100.0]
    bucket: Any = Bucket()
    limit = CommandLimit(bucket, 20.0, 200, clock=lambda: now[0])
    limit.lease("p")  # a quiet principal: a lot of one, spent by its own command
    assert not limit.spend("p")
    limit._leases["p"] = (5, now[0] + 1.0, 8)
    now[0] += 2.0  # past the lease
    assert not limit.spend("p")
    limit.lease("p")  # a fresh lot: the expired tokens are not carried over
    assert limit._leases["p"][0] == 0
