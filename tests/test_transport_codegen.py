"""The generated gRPC code matches the .proto, and the protocol is documented field by field."""

from __future__ import annotations

import re
import shutil

from fedstyle_secure.transport import codegen


def test_generated_code_is_fresh():
    codegen.ensure_generated()
    assert not codegen.is_stale(), "run `python -m fedstyle_secure.transport.codegen`"
    assert codegen.HASH_FILE.read_text().strip() == codegen.proto_digest()


def test_digest_changes_with_the_proto(tmp_path):
    shutil.copytree(codegen.PROTO_ROOT, tmp_path / "protos")
    before = codegen.proto_digest(tmp_path / "protos")
    path = tmp_path / "protos" / codegen.PROTO_FILES[0]
    path.write_text(path.read_text() + "\n// edited\n")
    assert codegen.proto_digest(tmp_path / "protos") != before


def test_every_message_field_enum_value_and_rpc_is_commented():
    lines = (codegen.PROTO_ROOT / codegen.PROTO_FILES[0]).read_text().splitlines()
    declaration = re.compile(
        r"^\s*(message |enum |service |rpc |(repeated |map<[^>]+> )?[\w.]+ \w+ = \d+;|[A-Z_]+ = \d+;)"
    )
    undocumented = [
        line.strip()
        for i, line in enumerate(lines)
        if declaration.match(line) and not lines[i - 1].strip().startswith("//")
    ]
    assert undocumented == []


def test_package_is_versioned():
    from fedstyle_secure.transport.wire import pb

    assert pb.DESCRIPTOR.package == "fedstyle.v1"
    assert "Federation" in pb.DESCRIPTOR.services_by_name
