"""core.slices: a background batch handled in slices, with the loop's other work run between two."""

from __future__ import annotations

import asyncio

from gomodel_proxy.core.slices import paced, sliced


async def _ticker(ticks: list[int]) -> None:
    while True:
        ticks.append(len(ticks))
        await asyncio.sleep(0)


async def test_sliced_gives_every_item_in_order_and_lets_the_loop_run_between_slices() -> None:
    ticks: list[int] = []
    ticker = asyncio.create_task(_ticker(ticks))
    await asyncio.sleep(0)  # the ticker has started
    seen: list[list[int]] = []
    ticks_at: list[int] = []
    async for part in sliced(list(range(10)), 4):
        ticks_at.append(len(ticks))
        seen.append(list(part))
    ticker.cancel()
    assert seen == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9]]
    # The first slice comes at once; before each later one the ticker ran.
    assert ticks_at[1] > ticks_at[0]
    assert ticks_at[2] > ticks_at[1]


async def test_sliced_of_nothing_is_nothing() -> None:
    assert [part async for part in sliced([], 4)] == []


async def test_paced_gives_every_item_and_a_turn_of_the_loop_every_size() -> None:
    ticks: list[int] = []
    ticker = asyncio.create_task(_ticker(ticks))
    await asyncio.sleep(0)
    seen: list[tuple[int, int]] = []
    async for item in paced(iter(range(7)), 3):
        seen.append((item, len(ticks)))
    ticker.cancel()
    assert [item for item, _ in seen] == list(range(7))
    at = [t for _, t in seen]
    assert at[0] == at[1] == at[2]  # within a slice the loop is not entered
    assert at[3] > at[2]  # after 3 items it is
    assert at[3] == at[4] == at[5] and at[6] > at[5]


async def test_a_task_in_a_hurry_does_not_give_the_loop_turns() -> None:
    ticks: list[int] = []
    ticker = asyncio.create_task(_ticker(ticks))
    await asyncio.sleep(0)
    behind = [True]
    at: list[int] = []
    async for _ in sliced(list(range(12)), 4, hurry=lambda: behind[0]):
        at.append(len(ticks))
    assert at[0] == at[1] == at[2]  # behind: every slice at once
    behind[0] = False
    items = []
    async for item in paced(range(6), 2, hurry=lambda: behind[0]):
        items.append((item, len(ticks)))
        behind[0] = item >= 3  # caught up for the first slices, then behind again
    ticker.cancel()
    t = [n for _, n in items]
    assert t[2] > t[1] and t[4] == t[3]
    assert [item for item, _ in items] == list(range(6))
