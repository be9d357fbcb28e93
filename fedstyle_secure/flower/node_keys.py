"""``python -m fedstyle_secure.flower.node_keys PATH``: a SuperNode authentication key pair.

Flower authenticates SuperNodes with an EC key on a NIST curve in OpenSSH format
(``flower-supernode --auth-supernode-private-key PATH``; ``flwr supernode register PATH.pub``).
This key only says which registered node connects; which *artist* a node serves is proven
separately with the artist's identity key (:func:`fedstyle_secure.flower.server.verified_artist`).
The private key is written 0600; nothing is overwritten.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from fedstyle_secure.errors import ConfigError


def write_node_key(path: Path) -> Path:
    """Write ``path`` (private, 0600) and ``path.pub`` (public, OpenSSH); returns the public path."""
    public_path = path.with_name(path.name + ".pub")
    for existing in (path, public_path):
        if existing.exists():
            raise ConfigError(f"{existing} exists; refusing to overwrite a SuperNode key")
    key = ec.generate_private_key(ec.SECP384R1())
    private = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH, serialization.NoEncryption()
    )
    public = key.public_key().public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
    path.parent.mkdir(parents=True, exist_ok=True)
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(descriptor, "wb") as handle:
        handle.write(private)
    public_path.write_bytes(public + b"\n")
    return public_path


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: python -m fedstyle_secure.flower.node_keys PATH  (writes PATH and PATH.pub)")
    print(write_node_key(Path(sys.argv[1])))
