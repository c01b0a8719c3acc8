"""The worker's guest threads: work runs in at most N threads, a blocked thread never holds up work
while the limit allows another, Futures for those who ask, shutdown, and threads that end with
their pool."""

from __future__ import annotations

import gc
import threading
import time
from concurrent.futures import CancelledError

import pytest

from workers.guest_threads import GuestThreads, RunSlots

WAIT_S = 10.0
"""Generous bound for a thread to get to its work (never a speed check)."""


def test_start_runs_work_in_a_named_thread() -> None:
    pool = GuestThreads(2, name="guest")
    ran = threading.Event()
    names: list[str] = []

    def work(tag: str) -> None:
        names.append(f"{tag}@{threading.current_thread().name}")
        ran.set()

    try:
        pool.start(work, "a")
        assert ran.wait(WAIT_S)
        assert names == ["a@guest_0"]
    finally:
        pool.shutdown()


def test_submit_gives_the_result_or_the_exception() -> None:
    pool = GuestThreads(1)

    def fail() -> None:
        raise ValueError("boom")

    try:
        assert pool.submit(pow, 2, 10).result(WAIT_S) == 1024
        with pytest.raises(ValueError, match="boom"):
            pool.submit(fail).result(WAIT_S)
        assert pool.submit(pow, 3, 2).result(WAIT_S) == 9  # the thread survived the exception
    finally:
        pool.shutdown()


def test_a_blocked_thread_does_not_hold_up_work_below_the_limit() -> None:
    pool = GuestThreads(3)
    release = threading.Event()
    try:
        blocked = [pool.submit(release.wait, WAIT_S) for _ in range(2)]
        # Two threads wait (as guests waiting for their client's answer do); a third takes this.
        assert pool.submit(threading.current_thread).result(WAIT_S).name.startswith("guest_")
        release.set()
        assert all(future.result(WAIT_S) for future in blocked)
    finally:
        pool.shutdown()


def test_never_more_threads_than_its_limit_and_work_waits_in_order() -> None:
    pool = GuestThreads(2, name="limit2")
    release = threading.Event()
    order: list[int] = []
    try:
        blocked = [pool.submit(release.wait, WAIT_S) for _ in range(2)]
        queued = [pool.submit(order.append, n) for n in range(5)]
        assert not any(future.done() for future in queued)  # both threads are taken
        release.set()
        for future in [*blocked, *queued]:
            future.result(WAIT_S)
        assert order == [0, 1, 2, 3, 4]
        assert len([t for t in threading.enumerate() if t.name.startswith("limit2_")]) == 2
    finally:
        pool.shutdown()


def test_shutdown_cancels_work_not_started_and_refuses_more() -> None:
    pool = GuestThreads(1)
    started, release = threading.Event(), threading.Event()

    def hold() -> bool:
        started.set()
        return release.wait(WAIT_S)

    running = pool.submit(hold)
    assert started.wait(WAIT_S)
    queued = pool.submit(pow, 2, 2)
    pool.shutdown(wait=False, cancel_futures=True)
    release.set()
    assert running.result(WAIT_S) is True
    with pytest.raises(CancelledError):
        queued.result(WAIT_S)
    with pytest.raises(RuntimeError, match="after shutdown"):
        pool.start(print)
    pool.shutdown()  # joins its thread; idempotent


def test_threads_end_with_a_pool_dropped_without_shutdown() -> None:
    pool = GuestThreads(2, name="dropped")
    assert pool.submit(pow, 2, 3).result(WAIT_S) == 8
    threads = [t for t in threading.enumerate() if t.name.startswith("dropped_")]
    assert threads
    del pool
    gc.collect()
    for thread in threads:
        thread.join(WAIT_S)
        assert not thread.is_alive()


def test_run_slots_count_who_waits_and_tell_when_a_waiting_guest_gives_one_back() -> None:
    slots = RunSlots(1)
    assert slots.try_acquire()
    assert not slots.try_acquire()
    given: list[str] = []
    slots.on_give_back = lambda: given.append("back")
    slots.give_back()  # a guest waits for its client's answer
    assert given == ["back"]
    assert slots.try_acquire()  # another call runs meanwhile
    answered = threading.Thread(target=slots.acquire)  # the answered guest wants its slot again
    answered.start()
    deadline = time.monotonic() + WAIT_S
    while slots.waiting != 1 and time.monotonic() < deadline:
        time.sleep(0.001)
    assert slots.waiting == 1  # a thread holding a slot lets go of it after its call
    slots.release()
    answered.join(WAIT_S)
    assert not answered.is_alive()
    assert slots.waiting == 0
    assert not slots.try_acquire()  # the answered guest holds the one slot
