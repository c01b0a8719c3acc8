"""Tasks on a worker: take queued work from JetStream, run it, store the result, ack.

One durable pull consumer per tool is shared by every worker serving that tool, so work is
spread across them. A worker fetches one message per tool at a time and only while it has a free
task slot (bounded prefetch: at most one task per tool waits in a worker's memory, briefly). Each
message's fate is its acknowledgement scope's (``bus.acks``): "in progress" every
``tasks.ack_wait_s / 3`` from the moment it is fetched, an ack only once the outcome is recorded,
a term for work that cannot be decoded, and a nak with ``ack_wait_s`` of delay for an attempt
that failed (the pause a worker that died would have left). A worker that dies mid-task stops
heartbeating: after ``ack_wait_s`` the server delivers the task again, to this worker's
replacement or another one, up to ``max_deliver`` times (then the registry fails it). The
record's compare-and-set makes every outcome but the first a no-op, so a task ends in exactly
one terminal status.
"""

from __future__ import annotations

import asyncio
import contextlib

import msgspec
import structlog
from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg
from nats.js.client import JetStreamContext

from bus.acks import Acknowledgement
from bus.cancellation import cancel_and_wait
from bus.errors import BusError, BusTimeout, GiveUp, nats_boundary
from bus.subjects import Subjects
from schemas.codec import DecodeError, decode, encode
from schemas.wire import CallToolResult, TaskWork, TextContent
from stores import TaskNotFound, TaskStore, task_consumer_config
from workers.answers import error_text
from workers.sandbox import CallContext
from workers.sandbox.replay import Replay
from workers.service import WorkerService

log = structlog.get_logger(__name__)

FETCH_WAIT_S = 5.0
"""How long one fetch (a long poll; it returns as soon as work arrives) waits before asking again."""
RETRY_S = 1.0
"""Pause after a failed fetch (the server restarting, a consumer being created)."""


class TaskRunner:
    """Runs the tasks of the tools a worker serves, at most ``slots`` at once."""

    def __init__(
        self, nc: NatsClient, subjects: Subjects, store: TaskStore, service: WorkerService, slots: int
    ) -> None:
        self._nc = nc
        self._subjects = subjects
        self._store = store
        self._service = service
        self._slots = asyncio.Semaphore(slots)
        self._room = asyncio.Event()
        """Set when a slot frees up (the fetch loops wait on it while every slot is busy)."""
        self._loops: dict[str, asyncio.Task[None]] = {}
        self._running: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        """Take tasks for every tool the worker serves now, and for each tool it serves later."""
        # The service tells us the moment its tool set changes (as dramatiq's worker adds a
        # consumer when it hears a queue declared), so nothing polls it.
        self._service.tool_listeners.append(self._sync_tools)
        self._sync_tools(frozenset(tool.name for tool in self._service.tools))

    async def stop(self, grace_s: float = 10.0) -> None:
        """Stop taking tasks; let running ones finish (unacked ones are redelivered otherwise)."""
        with contextlib.suppress(ValueError):  # never started
            self._service.tool_listeners.remove(self._sync_tools)
        loops = list(self._loops.values())
        self._loops.clear()
        await cancel_and_wait(loops)
        if self._running:
            await asyncio.wait(self._running, timeout=grace_s)

    def _sync_tools(self, tools: frozenset[str]) -> None:
        """Take tasks of exactly ``tools``: a fetch loop per new tool, none for a dropped one."""
        for tool in set(self._loops) - tools:
            self._loops.pop(tool).cancel()
        for tool in tools - set(self._loops):
            self._loops[tool] = asyncio.create_task(self._take(tool))

    async def _take(self, tool: str) -> None:
        js = self._nc.jetstream()
        subscription = None
        try:
            while True:
                # Ask for work only while a slot is free: a fetched task may then wait for a slot
                # only briefly (several tools may fetch for the same free slot), never in a backlog.
                while self._slots.locked():
                    self._room.clear()
                    await self._room.wait()
                try:
                    with nats_boundary:
                        if subscription is None:
                            subscription = await js.pull_subscribe(
                                self._subjects.task_work(tool),
                                durable=self._subjects.task_consumer(tool),
                                stream=self._subjects.tasks_stream,
                                config=task_consumer_config(self._subjects, tool, self._store.settings),
                            )
                        messages = await subscription.fetch(1, timeout=FETCH_WAIT_S)
                except BusTimeout:
                    continue
                except (BusError, OSError) as exc:
                    log.warning("taking tasks failed; retrying", tool=tool, error=str(exc))
                    await _unsubscribe_quietly(subscription)
                    subscription = None
                    await asyncio.sleep(RETRY_S)
                    continue
                for message in messages:
                    acknowledgement = Acknowledgement(
                        message,
                        in_progress_every_s=self._store.settings.ack_wait_s / 3,
                        retry_delay_s=self._store.settings.ack_wait_s,
                    )
                    # "In progress" from the moment the task is ours: while it waits for a slot too.
                    acknowledgement.keep_alive()
                    try:
                        await self._slots.acquire()
                    except asyncio.CancelledError:
                        acknowledgement.abandon()  # left unacked and silent: the server delivers it again
                        raise
                    running = asyncio.create_task(self._run(acknowledgement))
                    self._running.add(running)
                    running.add_done_callback(self._done)
        finally:
            # A pull subscription left behind (here, or above after a failed fetch) makes the
            # connection's drain wait its full timeout: a late status message (a fetch's 408)
            # sits unread in its queue, and nats-py's drain waits for that queue to empty. A
            # task message in it is unacked and is delivered again after ack_wait_s.
            await _unsubscribe_quietly(subscription)

    def _done(self, task: asyncio.Task[None]) -> None:
        self._running.discard(task)
        self._slots.release()
        self._room.set()
        if not task.cancelled() and (error := task.exception()) is not None:
            # Nak'ed by its scope: the server delivers the task again after ack_wait_s.
            log.warning("task attempt failed; it will be delivered again", error=repr(error))

    async def _run(self, acknowledgement: Acknowledgement) -> None:
        async with acknowledgement:  # returning acks; GiveUp terms; any other exception naks
            await self._attempt(acknowledgement.msg)

    async def _attempt(self, message: Msg) -> None:
        try:
            work = decode(message.data, TaskWork)
        except DecodeError as exc:
            log.error("undecodable task dropped", error=str(exc))
            raise GiveUp(f"undecodable task: {exc}") from exc
        attempt = message.metadata.num_delivered or 1
        worker_id = self._service.worker_id
        record = await self._store.update(
            work.task_id,
            lambda r: msgspec.structs.replace(
                r, running=True, attempts=attempt, worker_id=worker_id, status_message=f"running (attempt {attempt})"
            ),
        )
        if record is None:  # ended already (cancelled while queued, or finished by an earlier delivery)
            return
        # Its guest may ask its client: answers it was given replay; an unanswered question ends
        # this run and parks the task input_required until tasks/update answers it (Replay).
        replay = Replay(list(work.rounds), frozenset(work.capabilities))
        context = CallContext(request_id=work.task_id, asker=replay.ask, capabilities=replay.capabilities)
        try:
            arguments = await self._store.arguments(work)
        except (TaskNotFound, DecodeError) as exc:  # not readable now, so never: the task fails saying why
            result = CallToolResult(content=[TextContent(f"the task's arguments cannot be read: {exc}")], is_error=True)
        else:
            try:
                result = await self._service.run_task(work.tool, arguments, context)
            except Exception:
                if replay.pending is None:
                    raise
        if context.cancelled.is_set():
            return
        if replay.pending is not None:
            await self._store.wait_for_input(work, replay.pending, replay.rounds[: replay.asked])
            log.info("task waits for input", task_id=work.task_id, tool=work.tool, keys=sorted(replay.pending))
            return
        message_text = error_text(result)[:200] if result.is_error else ""
        await self._store.finish(
            work.task_id, encode(result), failed=result.is_error, message=message_text, crashed=context.crashed
        )
        log.info("task done", task_id=work.task_id, tool=work.tool, failed=result.is_error, attempt=attempt)


async def _unsubscribe_quietly(subscription: JetStreamContext.PullSubscription | None) -> None:
    """Drop a pull subscription; one whose connection is closing or gone needs nothing."""
    if subscription is not None:
        with contextlib.suppress(BusError), nats_boundary:
            await subscription.unsubscribe()
