"""The per-role NATS credentials of one machine's ``toolbus up``, kept under its state dir.

``toolbus up`` never runs its embedded nats-server open: the first start makes one random
password per role (``bus.permissions.ROLES``) and writes each to ``STATE_DIR/credentials/ROLE.json``
(``{"user": …, "password": …}``; the directory 0700, each file 0600, so only the user who runs
toolbus can read them). Later starts reuse them, so the server and every terminal agree.

Every verb run on the machine finds them: a process whose ``[nats]`` names no user takes its
role's file (``gateway``, ``worker`` or ``registry`` for those verbs; ``operator`` for every
other verb) — see ``with_local_credentials``. A user named in the config always wins, so a
deployment (compose, deploy/) is unaffected.
"""

from __future__ import annotations

import json
import os
import secrets
from pathlib import Path
from typing import Final

from bus.permissions import ROLES
from schemas.config import Settings

CREDENTIALS_DIR: Final = "credentials"
SERVER_ROLES: Final = ("gateway", "worker", "registry")
"""Verbs that run a role of their own name; every other verb is the ``operator``."""


def credentials_dir(state_dir: Path) -> Path:
    return state_dir / CREDENTIALS_DIR


def credentials_file(state_dir: Path, role: str) -> Path:
    """Where ``role``'s user and password live (``nats --user``/``--password`` can read them too)."""
    return credentials_dir(state_dir) / f"{role}.json"


def ensure_credentials(state_dir: Path) -> dict[str, str]:
    """Each role's password, made (and written, 0600) for the roles that have none yet."""
    directory = credentials_dir(state_dir)
    directory.mkdir(parents=True, exist_ok=True)
    directory.chmod(0o700)
    passwords = {}
    for role in ROLES:
        path = credentials_file(state_dir, role)
        if not path.exists():
            # O_EXCL and the mode at creation: the secret is never readable by others, not even briefly.
            descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(descriptor, "w", encoding="utf-8") as file:
                json.dump({"user": role, "password": secrets.token_urlsafe(24)}, file)
        passwords[role] = _read(path)[1]
    return passwords


def write_server_config(state_dir: Path, text: str) -> Path:
    """Write the embedded nats-server's config (it holds every password) beside the credentials, 0600."""
    path = credentials_dir(state_dir) / "nats-server.conf"
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.fchmod(descriptor, 0o600)  # a file left by an older run keeps its mode otherwise
    with os.fdopen(descriptor, "w", encoding="utf-8") as file:
        file.write(text)
    return path


def _read(path: Path) -> tuple[str, str]:
    data = json.loads(path.read_text(encoding="utf-8"))
    return str(data["user"]), str(data["password"])


def role_of_verb(verb: str | None) -> str:
    """The NATS role a ``toolbus`` verb connects as."""
    return verb if verb in SERVER_ROLES else "operator"


def with_local_credentials(settings: Settings, role: str) -> Settings:
    """``settings`` with ``role``'s user and password from the state dir, when ``[nats]`` names
    no user and ``toolbus up`` has made credentials on this machine; otherwise unchanged."""
    if settings.nats.user is not None:
        return settings
    path = credentials_file(settings.state_dir, role)
    if not path.exists():
        return settings
    user, password = _read(path)
    nats = settings.nats.model_copy(update={"user": user, "password": password})
    return settings.model_copy(update={"nats": nats})
