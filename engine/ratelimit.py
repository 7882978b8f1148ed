"""A token bucket for the `limit`/`burst` meta params (events per second)."""

from __future__ import annotations

import asyncio
import math
import time


class TokenBucket:
    """Allows `rate` events per second on average and `burst` at once."""

    def __init__(self, rate: float, burst: int) -> None:
        self.rate = rate
        self.capacity = float(max(burst, 1))
        self.tokens = self.capacity
        self.stamp = time.monotonic()

    async def acquire(self) -> None:
        """Take one token, waiting until one is available."""
        if math.isinf(self.rate):
            return
        now = time.monotonic()
        self.tokens = min(self.capacity, self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now
        if self.tokens < 1:
            await asyncio.sleep((1 - self.tokens) / self.rate)
            self.tokens = 1.0
            self.stamp = time.monotonic()
        self.tokens -= 1
