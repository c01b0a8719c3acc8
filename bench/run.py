"""Benchmark toolbus against the mcp SDK's own server and the limits of its parts.

    .venv/bin/python bench/run.py                 # the whole suite (~12 min on 2 cores)
    .venv/bin/python bench/run.py --quick         # one short run of each, for development
    .venv/bin/python bench/run.py --only http,bus # some sections
    .venv/bin/python bench/run.py --only wasm --merge  # re-measure a section into the existing report

Writes docs/performance.md, docs/performance.json and docs/performance.png (or --out DIR).
"""

from __future__ import annotations

import argparse
import signal
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # run as a script: make the `bench` package (and toolbus's) importable

from bench.plan import FULL, QUICK, SECTION_HELP, SECTIONS  # noqa: E402
from bench.suite import Options, execute  # noqa: E402


def _sections(text: str) -> tuple[str, ...]:
    chosen = tuple(s.strip() for s in text.split(",") if s.strip())
    unknown = [s for s in chosen if s not in SECTIONS]
    if unknown or not chosen:
        raise argparse.ArgumentTypeError(f"sections are {', '.join(SECTIONS)} (got {text!r})")
    return tuple(s for s in SECTIONS if s in chosen)


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="sections:\n" + "\n".join(f"  {name:<8} {text}" for name, text in SECTION_HELP.items()),
    )
    parser.add_argument("--quick", action="store_true", help="one short run of each (figures are rough)")
    parser.add_argument("--only", type=_sections, default=SECTIONS, metavar="SECTION,...", help="run only these")
    parser.add_argument("--out", type=Path, default=REPO / "docs", help="where the report goes (default: docs/)")
    parser.add_argument("--keep-logs", action="store_true", help="keep every process's log (kept anyway on failure)")
    parser.add_argument(
        "--no-profile", dest="profile", action="store_false", help="skip the py-spy sample of gateway and worker"
    )
    parser.add_argument(
        "--merge",
        action="store_true",
        help="fold the sections run into the report already in --out, keeping the other sections' figures",
    )
    args = parser.parse_args()
    if args.merge and args.quick:
        parser.error("--merge with --quick would put rough figures into a full report")
    if args.merge and not (args.out / "performance.json").is_file():
        parser.error(f"--merge needs an earlier report to merge into: no {args.out / 'performance.json'}")
    # Ctrl-C (even when started with SIGINT ignored, as background jobs are) and SIGTERM unwind
    # through the finally blocks that stop every child process.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    plan = QUICK if args.quick else FULL
    options = Options(plan, args.only, args.out, args.quick, args.keep_logs, args.profile, args.merge)
    try:
        return execute(options)
    except KeyboardInterrupt:
        print("bench: interrupted; every child process has been stopped", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
