"""``toolbus views set|delete|list``: curated views of the tools, changed at run time (docs/views.md).

A view set here goes into the views bucket (``stores.view_store``); every gateway serves it on
``/mcp/<name>`` within moments and tells that view's clients ``tools/list`` changed. ``list``
shows the bucket's views and, with ``--config``, the ``[views.*]`` of that file.

A store that refuses (a bad name, a missing bucket) is one line and exit 1 (``cli.options.run_verb``).
"""

from __future__ import annotations

import argparse
import sys

from bus.connection import connected
from bus.subjects import Subjects
from cli.options import add_common_options, add_json_option, run_verb, wants_json
from schemas.codec import encode
from schemas.config import Settings
from stores import ViewStore


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``views`` and its verbs."""
    views = subparsers.add_parser("views", help="curated subsets of tools, each on /mcp/<view>")
    verbs = views.add_subparsers(dest="views_command", required=True, metavar="VERB")
    set_ = verbs.add_parser("set", help="create or replace a view")
    add_common_options(set_)
    set_.add_argument("name", help="the view's name: its path is /mcp/NAME")
    set_.add_argument("tools", nargs="+", metavar="TOOL", help="tool names or globs, e.g. calc_add 'docs_*'")
    set_.set_defaults(run=lambda args: run_verb(args, _set))
    delete = verbs.add_parser("delete", help="remove a view set at run time")
    add_common_options(delete)
    delete.add_argument("name")
    delete.set_defaults(run=lambda args: run_verb(args, _delete))
    listing = verbs.add_parser("list", help="the views, with their tools")
    add_common_options(listing)
    add_json_option(listing)
    listing.set_defaults(run=lambda args: run_verb(args, _list))


async def _set(settings: Settings, args: argparse.Namespace) -> int:
    async with connected(settings.nats, name="toolbus-views") as nc:
        await (await ViewStore.open(nc, Subjects(settings.nats.prefix))).set(args.name, list(args.tools))
    print(f"view {args.name}: {' '.join(args.tools)}")
    return 0


async def _delete(settings: Settings, args: argparse.Namespace) -> int:
    async with connected(settings.nats, name="toolbus-views") as nc:
        deleted = await (await ViewStore.open(nc, Subjects(settings.nats.prefix))).delete(args.name)
    if not deleted:
        print(f"toolbus: no view {args.name!r} was set at run time", file=sys.stderr)
        return 1
    print(f"deleted view {args.name}")
    return 0


async def _list(settings: Settings, args: argparse.Namespace) -> int:
    async with connected(settings.nats, name="toolbus-views") as nc:
        stored = await (await ViewStore.open(nc, Subjects(settings.nats.prefix))).all()
    rows = {name: ("config", view.tools) for name, view in settings.views.items()}
    rows.update({name: ("run time", spec.tools) for name, spec in stored.items()})  # run-time views win
    if wants_json(args):
        print(encode([{"name": n, "source": s, "tools": t} for n, (s, t) in sorted(rows.items())]).decode())
        return 0
    width = max((len(name) for name in rows), default=4)
    print(f"{'NAME':<{width}}  {'SOURCE':<8}  TOOLS")
    for name, (source, tools) in sorted(rows.items()):
        print(f"{name:<{width}}  {source:<8}  {' '.join(tools) or '-'}")
    return 0
