"""A partial run folded into an earlier report: ``bench/run.py --only SECTION --merge``.

A full run takes several minutes and wants a quiet machine; re-measuring one section after a
change to it should not cost the other sections their figures. The merged results keep the
earlier run's figures, machine and plan for every other section, replace those of the sections
re-measured, and list under ``updates`` which sections were re-measured, when, by which
command, at which commit and on what machine state. The report says so under its header.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Final

from bench.plan import SECTIONS

RESULT_KEYS: Final = {"http": ("http", "profile")}
"""The results a section writes, where they are more than the one under its own name."""


class MergeError(RuntimeError):
    """Raised when there is no earlier report to merge into."""


def previous(out_dir: Path) -> dict[str, Any]:
    """The results of the report in ``out_dir``.

    Raises:
        MergeError: there is no readable ``performance.json`` there.
    """
    path = out_dir / "performance.json"
    try:
        results: dict[str, Any] = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise MergeError(f"--merge needs an earlier report to merge into: {path}: {exc}") from exc
    return results


def merge(earlier: dict[str, Any], fresh: dict[str, Any]) -> dict[str, Any]:
    """``earlier`` with the sections of ``fresh`` (a run without failures) replacing its own."""
    remeasured = list(fresh["sections"])
    merged = dict(earlier)
    for section in remeasured:
        for key in RESULT_KEYS.get(section, (section,)):
            if key in fresh:
                merged[key] = fresh[key]
            else:  # e.g. the py-spy profile of an http run made with --no-profile: none is better than a stale one
                merged.pop(key, None)
    merged["sections"] = [s for s in SECTIONS if s in earlier["sections"] or s in remeasured]
    merged["failures"] = {k: v for k, v in earlier.get("failures", {}).items() if k not in remeasured}
    updates = []
    for update in earlier.get("updates", []):  # an earlier update's sections measured again are its no more
        still = [s for s in update["sections"] if s not in remeasured]
        if still:
            updates.append({**update, "sections": still})
    updates.append(
        {
            "sections": remeasured,
            "command": fresh["command"],
            "duration_s": fresh["duration_s"],
            "plan": fresh["plan"],
            "machine": fresh["machine"],
        }
    )
    merged["updates"] = updates
    merged.pop("targets", None)  # evaluated again from the merged figures when the report is written
    return merged
