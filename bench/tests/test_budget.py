"""bench.budget: each sampled stack is charged to the hop named nearest its leaf."""

from __future__ import annotations

from bench.budget import GATEWAY, LOOP, WORKER, split

FLUSH = "StreamWriter.writelines (asyncio/streams.py:10)"


def test_the_same_socket_write_is_charged_to_whoever_made_it() -> None:
    raw = "\n".join(
        [
            f"Runner.run (asyncio/runners.py:1);Client._flusher (nats/aio/client.py:2);{FLUSH} 3",
            f"Runner.run (asyncio/runners.py:1);RequestResponseCycle.send (uvicorn/protocols/http/x.py:3);{FLUSH} 1",
        ]
    )
    shares = split(raw, GATEWAY)
    assert shares == {
        "NATS request/reply (nats-py: headers, publish, flush, reply, wait_for)": 0.75,
        "HTTP parse and response write (uvicorn, httptools)": 0.25,
    }


def test_worker_sandbox_steps_and_the_loop_are_told_apart() -> None:
    component = "LoadedComponent.call (workers/sandbox/component.py:5)"
    raw = "\n".join(
        [
            f"_worker (concurrent/futures/thread.py:1);{component};Store.__init__ (wasmtime/_store.py:9) 2",
            f"_worker (concurrent/futures/thread.py:1);{component};"
            "wasmtime_component_linker_instantiate (wasmtime/_bindings.py:4) 5",
            "Runner.run (asyncio/runners.py:1);BaseEventLoop._run_once (asyncio/base_events.py:2) 3",
        ]
    )
    shares = split(raw, WORKER)
    assert shares["sandbox: instantiate"] == 0.5
    assert shares["sandbox: Store, WASI, limits"] == 0.2
    assert shares[LOOP] == 0.3


def test_a_guest_thread_waiting_at_its_queue_is_the_hand_off_not_the_workers_own_work() -> None:
    waiting = "Thread._bootstrap (threading.py:1002);_work (workers/guest_threads.py:124)"
    running = f"{waiting[:-4]}:131);WorkerService._run_held_back (workers/service.py:460)"
    running += ";Job.run (workers/admission.py:70)"
    shares = split(f"{waiting} 3\n{running} 1", WORKER)
    assert shares == {
        "hand-off to a guest thread and back": 0.75,
        "admission, headers, decode, validate, reply encode": 0.25,
    }
