"""``toolbus registry``: keep the tool catalogue and answer registry requests."""

from __future__ import annotations

import argparse
import sys

import structlog

from bus.connection import connected
from bus.principal import PrincipalSigner
from bus.shutdown import wait_for_shutdown_signal
from bus.subjects import Subjects
from cli.options import add_common_options, run_verb
from schemas.config import Settings

log = structlog.get_logger(__name__)


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the ``registry`` verb."""
    parser = subparsers.add_parser("registry", help="run the tool registry against an existing NATS")
    add_common_options(parser)
    parser.set_defaults(run=lambda args: run_verb(args, serve))


async def serve(settings: Settings, _args: argparse.Namespace) -> int:
    """Run the registry until SIGTERM/SIGINT."""
    # The registry's machinery loads only when it runs (every verb builds the whole parser).
    from registry.errors import SignatureError
    from registry.service import RegistryService

    async with connected(settings.nats, name="toolbus-registry") as nc:
        service = RegistryService(
            nc,
            Subjects(settings.nats.prefix),
            settings.registry,
            settings.worker.announce_interval_s,
            settings.tasks,
            replicas=settings.nats.replicas,
            principal_signer=PrincipalSigner.for_key(settings.nats.principal_key),
            max_payload_bytes=settings.nats.max_payload_bytes,
        )
        try:
            await service.start()
        except SignatureError as exc:  # a [registry] trusted_keys file that cannot be used
            print(f"toolbus: registry: {exc}", file=sys.stderr)
            return 2
        signal_name = await wait_for_shutdown_signal()
        log.info("registry stopping", signal=signal_name)
        await service.stop()
    return 0
