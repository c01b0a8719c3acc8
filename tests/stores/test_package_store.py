"""``stores.package_store`` against a real nats-server: what the package store refuses, with which of
the stores' exceptions (the registry turns these into RELEASE_REJECTED, workers skip the version)."""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest
from nats.aio.client import Client as NatsClient

from bus.subjects import Subjects
from schemas.wire import PackageVersion
from stores import (
    ArtifactError,
    InvalidName,
    PackageStore,
    StoreError,
    VersionExists,
    artifact_digest,
    check_alias,
    check_name,
    check_version,
)


@pytest.mark.parametrize(
    ("check", "value"),
    [
        (check_name, "has.dot"),
        (check_version, "1.0"),
        (check_alias, "Latest"),
        # A final newline passed `match` with `$` and became part of a KV key (found by the s25 attack).
        (check_version, "1.0.0\n"),
        (check_alias, "stable\n"),
        (check_name, "pkg\n"),
        # Digits that are not ASCII are not a semantic version's.
        (check_version, "1.0.\N{SUPERSCRIPT TWO}"),
        (check_version, "\N{ARABIC-INDIC DIGIT ONE}.0.0"),
    ],
)
def test_a_name_a_key_cannot_hold_is_refused(check: Callable[[str], None], value: str) -> None:
    with pytest.raises(InvalidName) as caught:
        check(value)
    assert isinstance(caught.value, StoreError)


async def test_a_published_version_is_immutable(nc: NatsClient, subjects: Subjects) -> None:
    store = await PackageStore.open(nc, subjects)
    digest = await store.put_artifact(b"\0asm")
    record = PackageVersion(name="pkg", version="1.0.0", digest=digest, tools=[], published_at=time.time())
    await store.create_version(record)
    with pytest.raises(VersionExists, match=r"pkg 1\.0\.0 is already published; versions are immutable"):
        await store.create_version(record)


async def test_an_artifact_is_checked_against_its_digest(nc: NatsClient, subjects: Subjects) -> None:
    store = await PackageStore.open(nc, subjects)
    digest = await store.put_artifact(b"good bytes")
    assert await store.get_artifact(digest) == b"good bytes"
    missing = artifact_digest(b"never stored")
    with pytest.raises(ArtifactError, match="is not in the artifact store"):
        await store.get_artifact(missing)
    await store.artifacts.put(missing, b"other bytes")  # stored under a digest that is not theirs
    with pytest.raises(ArtifactError, match="is corrupt"):
        await store.get_artifact(missing)
