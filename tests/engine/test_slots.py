"""engine.slots.Slots: a bound, first come first served, and a cancelled waiter's slot; the
urgent lane served first, the ordinary one not starved."""

from __future__ import annotations

import asyncio

from engine.slots import URGENT_RUN, Slots


class Holders:
    """`count` tasks that each take an ordinary slot of `slots` and hold it until `release`
    is set: the order they got it in, and how many held one at once at most."""

    def __init__(self, slots: Slots, count: int) -> None:
        self.slots = slots
        self.order: list[int] = []
        self.active = self.peak = 0
        self.release = asyncio.Event()
        self.arrived = [asyncio.Event() for _ in range(count)]
        self.tasks = [asyncio.create_task(self._hold(i)) for i in range(count)]

    async def _hold(self, i: int) -> None:
        self.arrived[i].set()  # in the same step as its arrival at the slots (no await between)
        async with self.slots:
            self.order.append(i)
            self.active += 1
            self.peak = max(self.peak, self.active)
            await self.release.wait()
            self.active -= 1

    async def all_arrived(self) -> None:
        await asyncio.wait_for(asyncio.gather(*(e.wait() for e in self.arrived)), 10)

    async def end(self) -> None:
        self.release.set()
        await asyncio.wait_for(asyncio.gather(*self.tasks), 10)


async def test_at_most_size_holders_in_arrival_order() -> None:
    slots = Slots(2)
    holders = Holders(slots, 50)
    await holders.all_arrived()
    assert holders.order == [0, 1]
    await holders.end()
    assert holders.order == list(range(50)) and holders.peak == 2 and slots.free == 2


async def test_a_cancelled_waiter_gives_its_slot_on() -> None:
    slots = Slots(1)
    got: list[str] = []
    queued = {name: asyncio.Event() for name in ("waiting", "handed", "last")}

    async def hold(name: str) -> None:
        queued[name].set()  # in the same step as its arrival at the slots (no await between)
        async with slots:
            got.append(name)

    await slots.__aenter__()  # held by the test itself
    waiting = asyncio.create_task(hold("waiting"))
    handed = asyncio.create_task(hold("handed"))
    last = asyncio.create_task(hold("last"))
    await asyncio.wait_for(asyncio.gather(*(e.wait() for e in queued.values())), 10)
    waiting.cancel()
    await slots.__aexit__(None, None, None)  # hands the slot to `handed` (`waiting` skipped)
    handed.cancel()  # before it runs: the slot goes on to `last`
    await asyncio.gather(waiting, handed, last, return_exceptions=True)
    assert got == ["last"] and slots.free == 1


async def test_urgent_holders_go_first_and_ordinary_ones_still_get_a_turn() -> None:
    slots = Slots(1)
    order: list[str] = []
    names = [f"o{i}" for i in range(20)] + [f"u{i}" for i in range(20)]
    queued = {name: asyncio.Event() for name in names}

    async def hold(name: str) -> None:
        queued[name].set()  # in the same step as its arrival at the slots (no await between)
        async with slots.urgent() if name[0] == "u" else slots:
            order.append(name)

    await slots.__aenter__()  # held by the test itself
    tasks = [asyncio.create_task(hold(name)) for name in names]
    await asyncio.wait_for(asyncio.gather(*(e.wait() for e in queued.values())), 10)
    await slots.__aexit__(None, None, None)
    await asyncio.gather(*tasks)
    run = URGENT_RUN
    want = [
        *[f"u{i}" for i in range(run)],
        "o0",
        *[f"u{i}" for i in range(run, 2 * run)],
        "o1",
        *[f"u{i}" for i in range(2 * run, 20)],
        *[f"o{i}" for i in range(2, 20)],
    ]
    assert order == want and slots.free == 1


async def test_the_window_bounds_ordinary_holders_not_urgent_ones() -> None:
    """At most `window` ordinary holders at once, each new one let in as one leaves, in their
    order of arrival; an urgent one takes a free slot past those waiting for the window (no
    look at the window in the test's time: it would grow it)."""
    slots = Slots(10, window=2, tick=3600)
    holders = Holders(slots, 8)
    await holders.all_arrived()
    assert holders.order == [0, 1] and slots.free == 8
    async with slots.urgent():  # not held up by the window
        assert slots.free == 7
    await holders.end()
    assert holders.order == list(range(8)) and holders.peak == 2 and slots.free == 10


async def test_a_window_held_by_slow_holders_grows() -> None:
    """Ordinary holders that each wait for all of them to be in (as slow checks hold theirs):
    none leaves, so the window grows (at each look, TICK s apart, none having left) until all
    are in."""
    slots = Slots(100, window=2)
    count = 7
    inside = 0
    all_in = asyncio.Event()

    async def hold() -> None:
        nonlocal inside
        async with slots:
            inside += 1
            if inside == count:
                all_in.set()
            await all_in.wait()

    tasks = [asyncio.create_task(hold()) for _ in range(count)]
    await asyncio.wait_for(asyncio.gather(*tasks), 30)  # a bound that prevents a hang
    assert slots.free == 100
