"""``bus.embedded`` reports a server that cannot start as ``EmbeddedServerError``, the type
``toolbus up`` catches to say so (a taken port, a bad config), though it imports it lazily."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from bus.embedded import EmbeddedNatsServer
from bus.errors import BusError, EmbeddedServerError


def test_a_port_in_use_is_an_embedded_server_error_naming_the_cause(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        server = EmbeddedNatsServer(state_dir=tmp_path / "nats", port=port)
        with pytest.raises(EmbeddedServerError) as caught:
            server.start()
    assert isinstance(caught.value, BusError)
    assert "address already in use" in str(caught.value)
    assert not server.running


def test_a_config_the_server_refuses_is_an_embedded_server_error(tmp_path: Path) -> None:
    config = tmp_path / "nats.conf"
    config.write_text("this is { not a config\n", encoding="utf-8")
    server = EmbeddedNatsServer(state_dir=tmp_path / "nats", config_file=config)
    with pytest.raises(EmbeddedServerError, match="nats-server exited"):
        server.start()
    assert not server.running
