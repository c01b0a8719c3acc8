"""The worker's guest threads: at most ``threads`` threads taking work from one queue.

A ``ThreadPoolExecutor`` costs several µs of Python per call on the call path: a ``Future`` with
its ``Condition``, a work item, its idle semaphore (a Python ``Condition``) taken on each submit and
released after each item, and the Future's lock taken again to mark it running and to set its
result. ``GuestThreads.start`` hands a function to a thread through one C ``SimpleQueue`` and
nothing else; ``submit`` keeps the ``Executor`` API (a ``Future``) for the paths that want one
(surface requests, tasks).

Threads are made on demand, one whenever work arrives and no thread is idle, up to ``threads``:
a guest waiting for its client's answer holds its thread, and work must never wait behind it
while the limit allows another. They are not daemons: at interpreter exit they finish what they
run and stop (a daemon thread killed inside wasmtime aborts the process).
"""

from __future__ import annotations

import threading
import weakref
from collections.abc import Callable
from concurrent.futures import Executor, Future
from queue import Empty, SimpleQueue
from typing import Any, ParamSpec, TypeVar
from weakref import WeakSet

import structlog

log = structlog.get_logger(__name__)

P = ParamSpec("P")
T = TypeVar("T")

_Work = tuple[Callable[..., object], tuple[Any, ...], "Future[Any] | None"]

_LIVE: WeakSet[GuestThreads] = WeakSet()
"""Every pool with threads, stopped at interpreter exit (see ``_stop_all``)."""


def _stop_all() -> None:
    for pool in list(_LIVE):
        pool.shutdown(wait=False)


# Before the interpreter joins non-daemon threads (as concurrent.futures does for its pools).
threading._register_atexit(_stop_all)  # type: ignore[attr-defined]


class GuestThreads(Executor):
    """Runs functions in at most ``threads`` threads, in the order given."""

    def __init__(self, threads: int, name: str = "guest") -> None:
        self._max = threads
        self._name = name
        self._queue: SimpleQueue[_Work | None] = SimpleQueue()
        self._lock = threading.Lock()
        self._threads: list[threading.Thread] = []
        self._idle = 0
        """Threads waiting for work, less the work handed to them and not yet taken (under ``_lock``)."""
        self._closed = False
        queue = self._queue
        self._ref = weakref.ref(self, lambda _: queue.put(None))

    def start(self, fn: Callable[P, object], /, *args: P.args, **kwargs: P.kwargs) -> None:
        """Run ``fn(*args)`` in a guest thread; its outcome is ``fn``'s own business (what it raises is logged).

        Raises:
            RuntimeError: the pool is shut down.
        """
        assert not kwargs, "positional arguments only"
        self._put((fn, args, None))

    def submit(self, fn: Callable[P, T], /, *args: P.args, **kwargs: P.kwargs) -> Future[T]:
        """Run ``fn(*args)`` in a guest thread; its result (or exception) in the returned Future."""
        assert not kwargs, "positional arguments only"
        future: Future[T] = Future()
        self._put((fn, args, future))
        return future

    def _put(self, work: _Work) -> None:
        with self._lock:
            if self._closed:
                raise RuntimeError("cannot schedule new work after shutdown")
            if self._idle > 0:
                self._idle -= 1
            elif len(self._threads) < self._max:
                # The thread holds only a weak reference to its pool: a pool dropped without a
                # shutdown (a test's service never stopped) stops its threads, as a
                # ThreadPoolExecutor's do.
                args = (self._ref, self._queue)
                thread = threading.Thread(target=_work, args=args, name=f"{self._name}_{len(self._threads)}")
                self._threads.append(thread)
                _LIVE.add(self)
                thread.start()
            # else every thread is busy: the work waits in the queue for the first one free
            self._queue.put(work)

    def became_idle(self) -> None:
        """A thread finished its work and waits for more (called by the thread)."""
        with self._lock:
            self._idle += 1

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        """Take no more work; work already given still runs unless ``cancel_futures`` (then work
        not yet started is dropped and its Future cancelled). ``wait``: join the threads."""
        with self._lock:
            self._closed = True
        if cancel_futures:
            while True:
                try:
                    work = self._queue.get_nowait()
                except Empty:
                    break
                if work is not None and work[2] is not None:
                    work[2].cancel()
        self._queue.put(None)
        if wait:
            for thread in list(self._threads):
                thread.join()


def _work(pool_ref: weakref.ref[GuestThreads], queue: SimpleQueue[_Work | None]) -> None:
    """A guest thread: run work from ``queue`` until told to stop (``None``)."""
    while True:
        work = queue.get()
        if work is None:
            queue.put(None)  # wake the next thread: every one stops
            return
        fn, args, future = work
        del work
        if future is None:
            try:
                fn(*args)
            except Exception:  # a bug in ``fn``: the thread must live on for the next work
                log.exception("work in a guest thread failed", function=getattr(fn, "__qualname__", repr(fn)))
        elif future.set_running_or_notify_cancel():
            try:
                result = fn(*args)
            except BaseException as exc:
                future.set_exception(exc)
            else:
                future.set_result(result)
        del fn, args, future  # not kept alive while the thread waits
        pool = pool_ref()
        if pool is None:
            return
        pool.became_idle()
        del pool


class RunSlots:
    """At most ``slots`` guests running at once (``WorkerSettings.concurrency``), though more
    threads may hold a guest: one waiting for its client's answer gives its slot back meanwhile
    (``workers.conversation``) and takes one again (``acquire``) when answered.

    Tokens in a C ``SimpleQueue`` rather than a ``threading.Semaphore``, whose ``acquire`` and
    ``release`` are Python around a ``Condition``. The worker's threads take slots without waiting
    (``try_acquire``) and keep one while there are calls to run (``WorkerService._run_held_back``).
    """

    __slots__ = ("_count_lock", "_tokens", "on_give_back", "waiting")

    def __init__(self, slots: int) -> None:
        self._tokens: SimpleQueue[None] = SimpleQueue()
        for _ in range(slots):
            self._tokens.put(None)
        self._count_lock = threading.Lock()
        self.waiting = 0
        """Threads blocked in ``acquire`` (a resumed guest, a task): a thread holding a slot lets go
        of it after its call when this is not 0."""
        self.on_give_back: Callable[[], object] | None = None
        """Told (in the guest's thread) when a waiting guest gave its slot back: calls held back
        for a slot may start."""

    def acquire(self) -> None:
        """Take a slot, waiting for one if all are taken."""
        with self._count_lock:
            self.waiting += 1
        try:
            self._tokens.get()
        finally:
            with self._count_lock:
                self.waiting -= 1

    def try_acquire(self) -> bool:
        """Take a slot if one is free now."""
        try:
            self._tokens.get_nowait()
        except Empty:
            return False
        return True

    def free(self) -> bool:
        """Whether a slot is free now (a hint: another thread may take it first)."""
        return not self._tokens.empty()

    def release(self) -> None:
        """Give a slot back."""
        self._tokens.put(None)

    def give_back(self) -> None:
        """Give a slot back while the guest holding it waits (``acquire`` takes one again)."""
        self._tokens.put(None)
        if self.on_give_back is not None:
            self.on_give_back()
