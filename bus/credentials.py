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

import errno
import json
import os
import secrets
import stat
from pathlib import Path
from typing import Final

from bus.errors import CredentialsError
from schemas.config import Settings

CREDENTIALS_DIR: Final = "credentials"


def credentials_dir(state_dir: Path) -> Path:
    return state_dir / CREDENTIALS_DIR


def credentials_file(state_dir: Path, role: str) -> Path:
    """Where ``role``'s user and password live (``nats --user``/``--password`` can read them too)."""
    return credentials_dir(state_dir) / f"{role}.json"


def ensure_credentials(state_dir: Path) -> dict[str, str]:
    """Each role's password, made (and written, 0600) for the roles that have none yet.

    Raises:
        CredentialsError: the directory or a file in it is a symlink, another user's, or open to others.
    """
    directory = credentials_dir(state_dir)
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    status = os.lstat(directory)
    if stat.S_ISDIR(status.st_mode) and status.st_uid == os.geteuid():
        os.chmod(directory, 0o700, follow_symlinks=False)  # ours: close it whatever the umask was
        status = os.lstat(directory)
    _check_private(directory, status, directory=True)
    # Here, not at the top: a role only reads its own credentials (``with_local_credentials``,
    # at every start) and need not build the permission tables (~2 ms of a worker start, issue 17).
    from bus.permissions import ROLES

    passwords = {}
    for role in ROLES:
        path = credentials_file(state_dir, role)
        try:
            # O_EXCL (no symlink is followed either) and the mode at creation: the secret is
            # never readable by others, not even briefly.
            descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
        except FileExistsError:
            pass
        else:
            with os.fdopen(descriptor, "w", encoding="utf-8") as file:
                json.dump({"user": role, "password": secrets.token_urlsafe(24)}, file)
        passwords[role] = _read(path)[1]
    return passwords


def write_server_config(state_dir: Path, text: str) -> Path:
    """Write the embedded nats-server's config (it holds every password) beside the credentials, 0600.

    Raises:
        CredentialsError: a symlink or another user's file is in its place.
    """
    path = credentials_dir(state_dir) / "nats-server.conf"
    try:
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_NOFOLLOW, 0o600)
    except OSError as exc:  # ELOOP: a symlink, which would have us write the passwords elsewhere
        raise CredentialsError(f"{path}: cannot be written safely ({exc.strerror}); remove it") from exc
    with os.fdopen(descriptor, "w", encoding="utf-8") as file:
        if os.fstat(descriptor).st_uid != os.geteuid():
            raise CredentialsError(f"{path} belongs to another user; remove it")
        os.fchmod(descriptor, 0o600)  # a file left by an older run keeps its mode otherwise
        file.truncate()
        file.write(text)
    return path


def _check_private(path: Path, status: os.stat_result, *, directory: bool) -> None:
    """Refuse ``path`` unless it is a real directory / regular file of ours that nobody else may
    read or write: a password read from a file another user could write is one they chose."""
    kind = stat.S_ISDIR if directory else stat.S_ISREG
    if not kind(status.st_mode):
        raise CredentialsError(f"{path} is not a {'directory' if directory else 'regular file'} (a symlink?)")
    if status.st_uid != os.geteuid():
        raise CredentialsError(f"{path} belongs to user id {status.st_uid}, not to us; remove it")
    if status.st_mode & 0o077:
        raise CredentialsError(
            f"{path} is open to other users (mode {stat.S_IMODE(status.st_mode):o}); "
            f"chmod {'700' if directory else '600'} it, and change the passwords if others could read them"
        )


def _read(path: Path) -> tuple[str, str]:
    """The user and password of a credentials file, once it is shown to be private.

    Raises:
        CredentialsError: see ``_check_private``.
    """
    try:
        descriptor = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    except OSError as exc:
        if exc.errno in (errno.ELOOP, errno.EMLINK):
            raise CredentialsError(f"{path} is a symlink; remove it") from exc
        raise
    with os.fdopen(descriptor, encoding="utf-8") as file:
        _check_private(path, os.fstat(descriptor), directory=False)
        data = json.loads(file.read())
    return str(data["user"]), str(data["password"])


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
