"""``toolbus keys generate NAME``: a signing key pair for ``toolbus publish --sign`` (no NATS needed).

Writes ``NAME.key`` (unencrypted PKCS#8 PEM, mode 0600) and ``NAME.pub`` (PKIX PEM, what
``[registry] trusted_keys`` lists and ``cosign verify --key`` reads). See docs/signatures.md.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``keys generate``."""
    keys = subparsers.add_parser("keys", help="signing keys for `publish --sign`")
    verbs = keys.add_subparsers(dest="keys_command", required=True, metavar="VERB")
    generate = verbs.add_parser("generate", help="write NAME.key and NAME.pub (ECDSA P-256, cosign-compatible)")
    generate.add_argument("name", help="the key's name: shown as the signer of what it signs")
    generate.add_argument("--dir", type=Path, default=Path(), help="where to write them (default: here)")
    generate.set_defaults(run=_generate)


def _generate(args: argparse.Namespace) -> int:
    # Here, not at the top: cryptography is not worth loading for every other verb.
    from registry.signatures import fingerprint, generate_key_pair, load_trusted_key

    private_path, public_path = args.dir / f"{args.name}.key", args.dir / f"{args.name}.pub"
    for path in (private_path, public_path):
        if path.exists():
            print(f"toolbus: {path} exists; not overwriting a key", file=sys.stderr)
            return 1
    private_pem, public_pem = generate_key_pair()
    try:
        # O_EXCL and 0600: the private key is never readable by others, not even for a moment.
        descriptor = os.open(private_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(descriptor, "wb") as file:
            file.write(private_pem)
        public_path.write_bytes(public_pem)
    except OSError as exc:
        print(f"toolbus: {exc}", file=sys.stderr)
        return 1
    key = load_trusted_key(public_path)
    print(f"wrote {private_path} (keep it secret) and {public_path} (trust it: [registry] trusted_keys)")
    print(f"fingerprint {fingerprint(key.key)}")
    return 0
