"""Stopping background tasks that lose a cancellation (as nats-py's waits can on Python 3.11)."""

from __future__ import annotations

import asyncio

from bus.cancellation import cancel_and_wait


async def test_a_task_that_swallows_a_cancel_is_cancelled_again() -> None:
    swallowed = 0

    async def loop_that_swallows_once() -> None:
        nonlocal swallowed
        while True:
            try:
                await asyncio.sleep(3600)
            except asyncio.CancelledError:
                if swallowed:
                    raise
                swallowed += 1  # what a retrying loop does with a cancel turned into a bus error

    task = asyncio.create_task(loop_that_swallows_once())
    await asyncio.sleep(0)
    await asyncio.wait_for(cancel_and_wait([task]), timeout=5)
    assert task.cancelled() and swallowed == 1


async def test_a_task_that_never_ends_is_left_behind_after_the_patience() -> None:
    release = asyncio.Event()

    async def stubborn() -> None:
        while not release.is_set():
            try:
                await asyncio.sleep(3600)
            except asyncio.CancelledError:
                continue

    task = asyncio.create_task(stubborn())
    await asyncio.sleep(0)
    await asyncio.wait_for(cancel_and_wait([task], patience_s=0.5), timeout=5)
    assert not task.done()
    release.set()
    task.cancel()
    await asyncio.wait([task], timeout=1)


async def test_a_failed_task_does_not_fail_the_stop() -> None:
    async def fails() -> None:
        raise RuntimeError("boom")

    failed = asyncio.create_task(fails())
    sleeping = asyncio.create_task(asyncio.sleep(3600))
    await asyncio.sleep(0)
    await cancel_and_wait([failed, sleeping])
    assert sleeping.cancelled() and isinstance(failed.exception(), RuntimeError)
