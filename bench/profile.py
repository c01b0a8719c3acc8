"""Where a process spends its CPU under load: a py-spy sample, folded into top functions.

While wrk loads an endpoint, ``py-spy record --gil --nonblocking`` samples the gateway and the
worker at once. ``--gil`` keeps only samples of the thread holding the GIL, i.e. Python at work:
idle waits (epoll, a thread pool's queue) drop out, and so does guest time in wasmtime, which
releases the GIL. ``--nonblocking`` does not pause the processes. The folded stacks are reduced
to the functions with the most samples, counted two ways: *self* (the function was on top of the
stack; time in a C call such as a socket write counts for the Python function that made it) and
*inclusive* (anywhere on the stack, entry frames left out). Line numbers are dropped so a
function counts once. Profiling runs are extra runs: they never feed the measured figures.

py-spy is optional (``pip install py-spy``); without it this part is skipped.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import threading
from collections import Counter
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Final

from bench import wrk

SAMPLE_RATE_HZ: Final = 250
TOP: Final = 15
ENTRY_FRAMES: Final = frozenset(
    {
        "<module>",
        "_run_code",
        "_run_module_as_main",
        "main",
        "run",
        "Runner.run",
        "BaseEventLoop.run_forever",
        "BaseEventLoop.run_until_complete",
        "BaseEventLoop._run_once",
        "Thread._bootstrap",
        "Thread._bootstrap_inner",
        "Thread.run",
    }
)
"""Functions every stack passes through on its way in; left out of the inclusive list."""
_LINE = re.compile(r":\d+\)$")


def py_spy() -> str | None:
    """Path of py-spy (beside this Python, else on PATH), or None."""
    beside = Path(sys.executable).parent / "py-spy"
    return str(beside) if beside.is_file() else shutil.which("py-spy")


def _frame(frame: str) -> str:
    return _LINE.sub(")", frame.strip())


def fold(raw: str, top: int = TOP) -> dict[str, Any]:
    """Top functions of py-spy's raw output (``frame;frame;... count`` lines) by self and inclusive samples."""
    own: Counter[str] = Counter()
    anywhere: Counter[str] = Counter()
    total = 0
    for line in raw.splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        frames = [_frame(f) for f in stack.split(";")]
        total += count
        own[frames[-1]] += count
        for function in set(frames):
            anywhere[function] += count

    for function in [f for f in anywhere if f.split(" (", 1)[0] in ENTRY_FRAMES]:
        del anywhere[function]

    def share(counter: Counter[str]) -> list[dict[str, Any]]:
        return [{"function": f, "share": round(n / total, 4)} for f, n in counter.most_common(top)] if total else []

    return {"samples": total, "self": share(own), "inclusive": share(anywhere)}


def under_load(
    binary: str, load: wrk.Load, connections: int, processes: Mapping[str, int], duration_s: float, out_dir: Path
) -> dict[str, Any]:
    """Sample ``processes`` (role → pid) for ``duration_s`` while wrk loads the endpoint; fold each."""
    spy = py_spy()
    if spy is None:
        return {"skipped": "py-spy is not installed"}
    out_dir.mkdir(parents=True, exist_ok=True)
    load_result: dict[str, Any] = {}
    loader = threading.Thread(
        target=lambda: load_result.update(wrk.run(binary, load, connections, duration_s + 2)), daemon=True
    )
    loader.start()
    threading.Event().wait(1.0)  # let the load settle before sampling
    samplers = {}
    for role, pid in processes.items():
        raw_path = out_dir / f"{role}-{pid}.txt"
        argv = [spy, "record", "--format", "raw", "--gil", "--nonblocking", "-r", str(SAMPLE_RATE_HZ)]
        argv += ["-d", str(max(1, round(duration_s))), "--pid", str(pid), "-o", str(raw_path)]
        samplers[role] = (subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE), raw_path)
    folded: dict[str, Any] = {}
    for role, (process, raw_path) in samplers.items():
        _, stderr = process.communicate(timeout=duration_s + 60)
        if process.returncode != 0 or not raw_path.exists():
            folded[role] = {"error": stderr.decode(errors="replace")[-500:] or f"py-spy exited {process.returncode}"}
        else:
            folded[role] = fold(raw_path.read_text(errors="replace"))
    loader.join(duration_s + 70)
    return {"connections": connections, "load": load_result, "processes": folded}
