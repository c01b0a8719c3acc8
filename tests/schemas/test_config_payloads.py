"""``[nats] max_payload_bytes`` and the gateway's body limit derived from it (docs/bus-protocol.md,
"Payloads of any size")."""

from __future__ import annotations

import pytest

from schemas.config import load_settings
from schemas.errors import ConfigError

MIB = 1024 * 1024


def test_the_default_cap_is_64_mib_and_the_gateway_admits_it() -> None:
    settings = load_settings(None)
    assert settings.nats.max_payload_bytes == 64 * MIB
    assert settings.gateway.max_body_bytes == 65 * MIB  # the cap plus the JSON-RPC envelope


def test_the_body_limit_follows_a_raised_cap_and_an_explicit_one_is_kept() -> None:
    assert load_settings(None, nats={"max_payload_bytes": 256 * MIB}).gateway.max_body_bytes == 257 * MIB
    assert load_settings(None, nats={"max_payload_bytes": 2 * MIB}).gateway.max_body_bytes == 4 * MIB  # the old floor
    explicit = load_settings(None, nats={"max_payload_bytes": 256 * MIB}, gateway={"max_body_bytes": 8 * MIB})
    assert explicit.gateway.max_body_bytes == 8 * MIB


def test_a_cap_below_one_nats_message_is_refused_naming_the_field() -> None:
    with pytest.raises(ConfigError, match=r"nats\.max_payload_bytes"):
        load_settings(None, nats={"max_payload_bytes": 1000})
