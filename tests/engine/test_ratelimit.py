"""The token bucket behind meta limit/burst, on a controlled clock."""

from __future__ import annotations

import math

import pytest

from engine import ratelimit
from engine.ratelimit import TokenBucket


class Clock:
    def __init__(self) -> None:
        self.now = 100.0
        self.slept: list[float] = []

    def monotonic(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    fake = Clock()
    monkeypatch.setattr(ratelimit.time, "monotonic", fake.monotonic)
    monkeypatch.setattr(ratelimit.asyncio, "sleep", fake.sleep)
    return fake


async def test_burst_then_rate(clock: Clock) -> None:
    bucket = TokenBucket(rate=2.0, burst=3)
    for _ in range(3):
        await bucket.acquire()
    assert clock.slept == []  # the burst passes at once
    await bucket.acquire()
    await bucket.acquire()
    assert clock.slept == [pytest.approx(0.5), pytest.approx(0.5)]  # then 2 per second


async def test_infinite_rate_never_waits(clock: Clock) -> None:
    bucket = TokenBucket(rate=math.inf, burst=0)
    for _ in range(1000):
        await bucket.acquire()
    assert clock.slept == []


async def test_idle_time_refills_up_to_burst(clock: Clock) -> None:
    bucket = TokenBucket(rate=1.0, burst=2)
    await bucket.acquire()
    await bucket.acquire()
    clock.now += 60
    await bucket.acquire()
    await bucket.acquire()
    assert clock.slept == []
    await bucket.acquire()
    assert clock.slept == [pytest.approx(1.0)]
