"""The credentials of ``toolbus up`` against a local attacker who can plant files: passwords are
made private whatever the umask, never written through or read from a symlink, never taken
from a file another user owns or could have written."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from bus.credentials import credentials_dir, credentials_file, ensure_credentials, write_server_config
from bus.errors import CredentialsError
from bus.permissions import ROLES

NOBODY = 65534


@pytest.fixture
def wide_open_umask() -> Iterator[None]:
    previous = os.umask(0)
    try:
        yield
    finally:
        os.umask(previous)


def test_the_credentials_are_private_whatever_the_umask(tmp_path: Path, wide_open_umask: None) -> None:
    passwords = ensure_credentials(tmp_path / "state")
    config = write_server_config(tmp_path / "state", "secret config")
    assert set(passwords) == set(ROLES) and len(set(passwords.values())) == len(ROLES)
    assert credentials_dir(tmp_path / "state").stat().st_mode & 0o777 == 0o700
    for role in ROLES:
        assert credentials_file(tmp_path / "state", role).stat().st_mode & 0o777 == 0o600
    assert config.stat().st_mode & 0o777 == 0o600
    assert ensure_credentials(tmp_path / "state") == passwords  # kept across starts


def planted(tmp_path: Path) -> Path:
    """A file the attacker owns and reads: what a symlink of theirs points at."""
    target = tmp_path / "attacker" / "known.json"
    target.parent.mkdir()
    target.write_text(json.dumps({"user": "operator", "password": "chosen-by-the-attacker"}))
    return target


def test_a_planted_symlink_for_a_password_is_refused(tmp_path: Path) -> None:
    state = tmp_path / "state"
    credentials_dir(state).mkdir(parents=True, mode=0o700)
    target = planted(tmp_path)
    credentials_file(state, "operator").symlink_to(target)
    with pytest.raises(CredentialsError, match="symlink"):
        ensure_credentials(state)
    # A dangling one (where the attacker wants our password written) is not written through either.
    credentials_file(state, "operator").unlink()
    credentials_file(state, "operator").symlink_to(tmp_path / "attacker" / "new.json")
    with pytest.raises(CredentialsError, match="symlink"):
        ensure_credentials(state)
    assert not (tmp_path / "attacker" / "new.json").exists()


def test_a_planted_symlink_for_the_server_config_is_not_written_through(tmp_path: Path) -> None:
    state = tmp_path / "state"
    ensure_credentials(state)
    target = planted(tmp_path)
    before = target.read_text()
    (credentials_dir(state) / "nats-server.conf").symlink_to(target)
    with pytest.raises(CredentialsError):
        write_server_config(state, "every password")
    assert target.read_text() == before


def test_a_credentials_directory_that_is_a_symlink_is_refused(tmp_path: Path) -> None:
    state = tmp_path / "state"
    state.mkdir()
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir(mode=0o700)
    credentials_dir(state).symlink_to(elsewhere)
    with pytest.raises(CredentialsError, match="not a directory"):
        ensure_credentials(state)
    assert list(elsewhere.iterdir()) == []


def test_a_password_file_open_to_others_is_refused(tmp_path: Path) -> None:
    state = tmp_path / "state"
    ensure_credentials(state)
    credentials_file(state, "worker").chmod(0o644)
    with pytest.raises(CredentialsError, match="open to other users"):
        ensure_credentials(state)


@pytest.mark.skipif(os.geteuid() != 0, reason="only root can give a file to another user")
def test_a_password_file_or_directory_of_another_user_is_refused(tmp_path: Path) -> None:
    state = tmp_path / "state"
    ensure_credentials(state)
    os.chown(credentials_file(state, "gateway"), NOBODY, NOBODY)
    with pytest.raises(CredentialsError, match="belongs to user id"):
        ensure_credentials(state)
    os.chown(credentials_file(state, "gateway"), os.geteuid(), os.getegid())
    os.chown(credentials_dir(state), NOBODY, NOBODY)
    with pytest.raises(CredentialsError, match="belongs to user id"):
        ensure_credentials(state)
