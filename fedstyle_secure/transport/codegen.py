"""Generate the Python gRPC code of ``protos/fedstyle/v1/*.proto`` into ``transport/_generated``.

The generated modules are build products, not sources: ``python -m
fedstyle_secure.transport.codegen`` (run by the Makefile) writes them, and
:func:`ensure_generated` regenerates them at import time when they are missing or stale.
Staleness is decided by a SHA-256 over the ``.proto`` sources recorded in ``PROTO_SHA256``.
"""

from __future__ import annotations

import hashlib
import importlib.resources
import re
import sys
from pathlib import Path

from fedstyle_secure.errors import TransportError

PACKAGE_DIR = Path(__file__).resolve().parent
PROTO_ROOT = PACKAGE_DIR.parents[1] / "protos"
PROTO_FILES: tuple[str, ...] = ("fedstyle/v1/federation.proto",)
GENERATED_DIR = PACKAGE_DIR / "_generated"
HASH_FILE = GENERATED_DIR / "PROTO_SHA256"
GENERATED_PACKAGE = "fedstyle_secure.transport._generated"


def proto_digest(root: Path = PROTO_ROOT) -> str:
    """SHA-256 (hex) over every proto file's relative path and bytes, in order."""
    digest = hashlib.sha256()
    for relative in PROTO_FILES:
        digest.update(relative.encode() + b"\0" + (root / relative).read_bytes() + b"\0")
    return digest.hexdigest()


def is_stale() -> bool:
    """Whether the generated code is missing or was produced from other ``.proto`` sources."""
    return not HASH_FILE.exists() or HASH_FILE.read_text().strip() != proto_digest()


def _fix_imports(path: Path) -> None:
    """protoc writes ``from fedstyle.v1 import x_pb2``; make it a package-relative import."""
    text = path.read_text()
    text = re.sub(r"^from fedstyle\.v1 import", f"from {GENERATED_PACKAGE}.fedstyle.v1 import", text, flags=re.M)
    path.write_text(text)


def generate() -> Path:
    """Run protoc (grpcio-tools) into :data:`GENERATED_DIR`; return it.  Raises TransportError."""
    try:
        from grpc_tools import protoc
    except ImportError as exc:  # pragma: no cover - grpcio-tools is a dev dependency
        raise TransportError("grpcio-tools is needed to generate the gRPC code: pip install grpcio-tools") from exc
    out = GENERATED_DIR
    (out / "fedstyle" / "v1").mkdir(parents=True, exist_ok=True)
    for package in (out, out / "fedstyle", out / "fedstyle" / "v1"):
        (package / "__init__.py").touch()
    include = importlib.resources.files("grpc_tools") / "_proto"
    args = [
        "protoc",
        f"-I{PROTO_ROOT}",
        f"-I{include}",
        f"--python_out={out}",
        f"--pyi_out={out}",
        f"--grpc_python_out={out}",
    ]
    status = protoc.main(args + [str(PROTO_ROOT / p) for p in PROTO_FILES])
    if status != 0:
        raise TransportError(f"protoc failed with status {status} on {', '.join(PROTO_FILES)}")
    for generated in (out / "fedstyle" / "v1").glob("*_pb2*.py"):
        _fix_imports(generated)
    HASH_FILE.write_text(proto_digest() + "\n")
    return out


def ensure_generated() -> None:
    """Regenerate when missing or stale (a source checkout); an installed wheel ships fresh code."""
    if PROTO_ROOT.exists() and is_stale():
        generate()


if __name__ == "__main__":
    print(f"generated {generate()} from {', '.join(PROTO_FILES)}", file=sys.stderr)
