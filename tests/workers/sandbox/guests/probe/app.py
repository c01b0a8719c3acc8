"""A probe of the sandbox: each export tries one thing a hostile guest would try.

Failures come back as the WIT result's error case (``Err``) carrying the guest's own error
message, so a test can tell "refused by the sandbox" from "the probe is broken" (an uncaught
exception traps instead).
"""

import os
import socket

import wit_world
from componentize_py_types import Err
from wit_world.imports import client


def _err(exc: BaseException) -> Err:
    return Err(f"{type(exc).__name__}: {exc}")


class WitWorld(wit_world.WitWorld):
    def read_file(self, path: str) -> str:
        try:
            with open(path, encoding="utf-8") as f:
                return f.read()
        except OSError as exc:
            raise _err(exc) from None

    def write_file(self, path: str, content: str) -> int:
        try:
            with open(path, "w", encoding="utf-8") as f:
                return f.write(content)
        except OSError as exc:
            raise _err(exc) from None

    def list_dir(self, path: str) -> list[str]:
        try:
            return sorted(os.listdir(path))
        except OSError as exc:
            raise _err(exc) from None

    def get_env(self, name: str) -> str | None:
        return os.environ.get(name)

    def env_names(self) -> list[str]:
        return sorted(os.environ)

    def fetch(self, url: str) -> str:
        try:
            response = client.fetch(client.Request(method="GET", url=url, headers=[], body=None))
        except Err as exc:
            raise Err(f"fetch failed: {exc.value}") from None
        return f"{response.status} {bytes(response.body).decode('utf-8', 'replace')}"

    def connect(self, host: str, port: int) -> str:
        # A numeric address: getaddrinfo needs the idna codec, which the guest's stdlib lacks.
        try:
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            try:
                sock.connect((host, port))
            finally:
                sock.close()
        except Exception as exc:
            raise _err(exc) from None
        return "connected"
