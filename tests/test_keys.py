"""Key material: PKI, on-disk layout and bundles, validated loading, and ``fedstyle keys``."""

from __future__ import annotations

import datetime as dt
import hashlib
import ipaddress
import json
import os
import shutil
import stat
from pathlib import Path
from typing import BinaryIO

import pytest
from cryptography import x509

from fedstyle_secure.cli.main import main
from fedstyle_secure.errors import ConfigError, SecureAggregationError
from fedstyle_secure.secure.keys import keystore, pki

ARTISTS = ["alice", "bob", "carol"]


@pytest.fixture(scope="module")
def key_set(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("keyset") / "keys"
    keystore.write_key_files(
        out, keystore.generate_key_files(ARTISTS, server_hosts=["fed.example", "10.0.0.7"], buyers=["dana"])
    )
    return out


@pytest.fixture
def scratch(key_set: Path, tmp_path: Path) -> Path:
    """A private copy of the key set that a test may damage."""
    return Path(shutil.copytree(key_set, tmp_path / "keys"))


def _files(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*") if p.is_file()}


def _rehash(keys_dir: Path, relative: str) -> None:
    """Update the manifest to the file's current hash (an administrator mixing key sets)."""
    manifest = json.loads((keys_dir / keystore.MANIFEST).read_text())
    manifest["files"][relative] = hashlib.sha256((keys_dir / relative).read_bytes()).hexdigest()
    (keys_dir / keystore.MANIFEST).write_text(json.dumps(manifest))


def _replace(keys_dir: Path, relative: str, data: bytes) -> None:
    (keys_dir / relative).write_bytes(data)
    _rehash(keys_dir, relative)


def test_fedstyle_keys_init_writes_layout_with_private_secrets(tmp_path: Path) -> None:
    out = tmp_path / "keys"
    assert main(["keys", "init", "--out", str(out), "--count", "2", "--server-host", "fed.example"]) == 0

    expected = {
        "manifest.json",
        "KEYSET.md",
        "ca.crt",
        "ca.key",
        "server.crt",
        "server.key",
        "ckks-public.ctx",
        "ckks-secret.ctx",
        "identity/artist_00.pub",
        "identity/artist_01.pub",
    } | {f"artists/artist_0{i}/{name}" for i in range(2) for name in ("client.crt", "client.key", "identity.key")}
    assert _files(out) == expected
    for relative in expected:
        mode = stat.S_IMODE((out / relative).stat().st_mode)
        assert mode == (0o600 if keystore.is_secret_path(relative) else 0o644), relative
    assert "ckks-secret.ctx" in (out / "KEYSET.md").read_text()
    assert main(["keys", "init", "--out", str(out), "--count", "2"]) == 2  # never overwrites a key set


def test_certificates_carry_hosts_and_artist_identity(key_set: Path) -> None:
    server = x509.load_pem_x509_certificate((key_set / "server.crt").read_bytes())
    sans = server.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    client = x509.load_pem_x509_certificate((key_set / "artists/bob/client.crt").read_bytes())

    assert sans.get_values_for_type(x509.DNSName) == ["fed.example"]
    assert sans.get_values_for_type(x509.IPAddress) == [ipaddress.ip_address("10.0.0.7")]
    assert pki.client_identity(client) == (pki.Role.ARTIST, "bob")
    assert client.subject.rfc4514_string() == "CN=bob"


def test_bundles_hold_only_what_each_machine_needs(key_set: Path, tmp_path: Path) -> None:
    assert main(["keys", "bundle", "--keys", str(key_set), "--artist", "bob", "--out", str(tmp_path / "bob")]) == 0
    assert main(["keys", "bundle", "--keys", str(key_set), "--server", "--out", str(tmp_path / "srv")]) == 0
    identities = {f"identity/{a}.pub" for a in ARTISTS}

    assert (
        _files(tmp_path / "bob")
        == {
            "manifest.json",
            "ca.crt",
            "ckks-secret.ctx",
            "artists/bob/client.crt",
            "artists/bob/client.key",
            "artists/bob/identity.key",
        }
        | identities
    )
    assert (
        _files(tmp_path / "srv")
        == {"manifest.json", "ca.crt", "server.crt", "server.key", "ckks-public.ctx"} | identities
    )
    artist = keystore.load_artist_keys(tmp_path / "bob")
    server = keystore.load_server_keys(tmp_path / "srv")
    assert artist.artist_id == "bob" and artist.ckks.has_secret_key
    assert not server.ckks.has_secret_key and server.ckks.fingerprint == artist.ckks.fingerprint
    assert set(server.identity_public_keys) == set(ARTISTS)
    assert server.identity_public_keys["bob"] == artist.identity_key.public_key()
    assert main(["keys", "check", "--keys", str(tmp_path / "bob")]) == 0


def test_auditor_bundle_holds_only_public_identity_keys(key_set: Path, tmp_path: Path) -> None:
    assert main(["keys", "bundle", "--keys", str(key_set), "--auditor", "--out", str(tmp_path / "audit")]) == 0
    assert _files(tmp_path / "audit") == {"manifest.json", "ca.crt"} | {f"identity/{a}.pub" for a in ARTISTS}
    assert json.loads((tmp_path / "audit" / "manifest.json").read_text())["bundle"] == {"role": "auditor"}
    assert keystore.load_identity_keys(tmp_path / "audit") == keystore.load_identity_keys(key_set)
    assert list(keystore.load_identity_keys(tmp_path / "audit")) == ARTISTS  # roster order


KEY = "artists/alice/client.key"


@pytest.mark.parametrize(
    "relative, donor, named, error, message",
    [
        (KEY, "ca.crt", KEY, ConfigError, "expected a PEM private key, found a PEM 'CERTIFICATE' block"),
        ("artists/alice/identity.key", KEY, "artists/alice/identity.key", ConfigError, "expected an Ed25519"),
        ("ckks-secret.ctx", "ckks-public.ctx", "ckks-secret.ctx", SecureAggregationError, "lacks the CKKS secret key"),
        (KEY, "artists/bob/client.key", KEY, SecureAggregationError, "does not match the certificate"),
        (
            "artists/alice/client.crt",
            "artists/bob/client.crt",
            KEY,
            SecureAggregationError,
            "does not match the certificate",
        ),
    ],
)
def test_wrong_or_mismatched_file_is_refused_naming_it(
    scratch: Path, relative: str, donor: str, named: str, error: type[Exception], message: str
) -> None:
    _replace(scratch, relative, (scratch / donor).read_bytes())
    with pytest.raises(error, match=message) as caught:
        keystore.load_artist_keys(scratch, "alice")
    assert str(caught.value).startswith(f"{scratch / named}: ")


def test_another_artists_certificate_and_key_are_refused(scratch: Path) -> None:
    for name in ("client.crt", "client.key"):
        _replace(scratch, f"artists/alice/{name}", (scratch / f"artists/bob/{name}").read_bytes())
    with pytest.raises(SecureAggregationError, match=r"alice/client.crt: issued to CN=\['bob'\]"):
        keystore.load_artist_keys(scratch, "alice")


def test_certificate_of_another_ca_is_refused(scratch: Path, tmp_path: Path) -> None:
    other = tmp_path / "other"
    keystore.write_key_files(other, keystore.generate_key_files(ARTISTS))
    _replace(scratch, "server.crt", (other / "server.crt").read_bytes())
    _replace(scratch, "server.key", (other / "server.key").read_bytes())
    with pytest.raises(SecureAggregationError, match="server.crt: not signed by this key set's CA"):
        keystore.load_server_keys(scratch)


def test_tampered_file_is_refused(scratch: Path) -> None:
    (scratch / "identity/carol.pub").write_bytes((scratch / "identity/alice.pub").read_bytes())
    with pytest.raises(SecureAggregationError, match=r"identity/carol.pub: SHA-256 differs"):
        keystore.load_server_keys(scratch)


def test_identity_key_not_in_manifest_is_refused(scratch: Path) -> None:
    shutil.copy(scratch / "identity/alice.pub", scratch / "identity/mallory.pub")
    with pytest.raises(
        SecureAggregationError, match="mallory.pub: identity key of 'mallory', who is not in the manifest"
    ):
        keystore.load_server_keys(scratch)


def test_expired_certificate_is_refused(tmp_path: Path) -> None:
    two_years_ago = dt.datetime.now(dt.timezone.utc) - dt.timedelta(days=730)
    keystore.write_key_files(
        tmp_path / "old", keystore.generate_key_files(["alice"], now=two_years_ago, validity_days=30)
    )
    with pytest.raises(SecureAggregationError, match=r"artists/alice/client.crt: expired on"):
        keystore.load_artist_keys(tmp_path / "old", "alice")


def test_group_readable_secret_is_refused(scratch: Path) -> None:
    (scratch / "server.key").chmod(0o644)
    with pytest.raises(ConfigError, match=r"server.key: secret file is accessible by group/others"):
        keystore.load_server_keys(scratch)


def test_init_into_a_folder_with_planted_links_and_open_files_gives_them_no_secret(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Another local user may have prepared the output folder: a link named like a key file, or a key
    file it holds open. A folder holding anything is refused outright, untouched (before, keys were
    written among its files and it was made 0700). Planted in the race after that check, each file is
    still a new inode renamed into place: the link's target and the open descriptor see no key
    (before, the key was written through the link and into the open file)."""
    victim = tmp_path / "victim.conf"
    victim.write_text("important = 1\n")

    def plant(out: Path) -> BinaryIO:
        (out / "server.key").symlink_to(victim)
        (out / "ca.key").write_bytes(b"")
        return open(out / "ca.key", "rb")

    prepared = tmp_path / "prepared"
    prepared.mkdir(mode=0o755)
    plant(prepared).close()
    assert main(["keys", "init", "--out", str(prepared), "--count", "1"]) == 2
    assert sorted(p.name for p in prepared.iterdir()) == ["ca.key", "server.key"]
    assert (prepared / "server.key").is_symlink() and stat.S_IMODE(prepared.stat().st_mode) == 0o755

    held: list = []
    emptiness_check = keystore._require_new_or_empty

    def check_then_plant(out: Path) -> None:  # the attacker wins the race right after the check
        emptiness_check(out)
        out.mkdir()
        held.append(plant(out))

    monkeypatch.setattr(keystore, "_require_new_or_empty", check_then_plant)
    out = tmp_path / "keys"
    assert main(["keys", "init", "--out", str(out), "--count", "1"]) == 0
    with held[0] as held_open:
        assert held_open.read() == b"", "the CA key was written into a file another process held open"
    assert victim.read_text() == "important = 1\n", "a key was written through a planted link"
    assert not (out / "server.key").is_symlink() and b"PRIVATE KEY" in (out / "server.key").read_bytes()
    assert stat.S_IMODE(out.stat().st_mode) == 0o700
    keystore.load_server_keys(out)


@pytest.mark.skipif(os.geteuid() != 0, reason="playing a second local user needs root")
def test_init_into_a_folder_another_user_owns_is_refused(tmp_path: Path) -> None:
    """Its owner could read or replace every file written there (the CA key among them)."""
    out = tmp_path / "theirs"
    out.mkdir(mode=0o777)
    os.chown(out, 65534, 65534)  # nobody
    assert main(["keys", "init", "--out", str(out), "--count", "1"]) == 2
    assert list(out.iterdir()) == []
    link = tmp_path / "link"
    link.symlink_to(tmp_path / "elsewhere", target_is_directory=True)
    (tmp_path / "elsewhere").mkdir()
    with pytest.raises(ConfigError, match="is not a directory owned by this user"):
        keystore.write_key_files(link, keystore.generate_key_files(["alice"]))


def test_init_under_a_folder_others_may_write_is_refused(tmp_path: Path) -> None:
    """Red-team review 12: whoever may rename entries in a parent folder could swap the new key folder
    for one of theirs between its check and the writes. A shared, non-sticky parent is refused; a
    sticky one (like /tmp) is not, since only an entry's owner may rename it there."""
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o777)
    assert main(["keys", "init", "--out", str(shared / "team" / "keys"), "--count", "1"]) == 2
    with pytest.raises(ConfigError, match=f"{shared} \\(above .*writable by others \\(mode 777\\)"):
        keystore.write_key_files(shared / "keys", keystore.generate_key_files(["alice"]))
    assert list(shared.iterdir()) == [shared / "team"]  # the parents made on the way, no key file
    shared.chmod(0o1777)
    keystore.write_key_files(shared / "keys", keystore.generate_key_files(["alice"]))
    keystore.load_artist_keys(shared / "keys", "alice")


@pytest.mark.skipif(os.geteuid() != 0, reason="playing a second local user needs root")
def test_init_under_a_folder_or_link_another_user_owns_is_refused(tmp_path: Path) -> None:
    theirs = tmp_path / "theirs"
    theirs.mkdir(mode=0o755)
    os.chown(theirs, 65534, 65534)  # nobody: may swap ``theirs/keys`` after it was checked
    with pytest.raises(ConfigError, match="is owned by uid 65534"):
        keystore.write_key_files(theirs / "keys", keystore.generate_key_files(["alice"]))
    (tmp_path / "mine").mkdir()
    link = tmp_path / "link"
    link.symlink_to(tmp_path / "mine", target_is_directory=True)
    os.lchown(link, 65534, 65534)  # its owner may point it elsewhere
    with pytest.raises(ConfigError, match=f"{link} \\(above"):
        keystore.write_key_files(link / "keys", keystore.generate_key_files(["alice"]))
    assert list((tmp_path / "mine").iterdir()) == []


def _nested(depth: int) -> bytes:
    return b'{"x": ' + b"[" * depth + b"]" * depth + b"}"


@pytest.mark.parametrize(
    ("content", "words"),
    [
        (_nested(200_000), "maximum recursion depth"),  # a RecursionError traceback once
        (_nested(40), "nested more than 32 levels"),
        (None, f"larger than {keystore.MAX_MANIFEST_BYTES} bytes"),  # a sparse file, once read whole
    ],
    ids=["nested 200,000 deep", "nested 40 deep", "a sparse file past the cap"],
)
def test_a_crafted_manifest_is_refused_before_it_is_read_whole(
    scratch: Path, content: bytes | None, words: str
) -> None:
    path = scratch / keystore.MANIFEST
    if content is None:
        with open(path, "wb") as handle:
            handle.truncate(keystore.MAX_MANIFEST_BYTES + 1)
    else:
        path.write_bytes(content)
    with pytest.raises(ConfigError, match=f"manifest.json: unreadable manifest: .*{words}"):
        keystore.load_artist_keys(scratch, "alice")


def test_a_buyer_s_key_files_are_checked_before_any_connection(scratch: Path, tmp_path: Path) -> None:
    """The buyer's bundle was read raw; now it is checked like the artists' and the server's."""
    ca, certificate, key = keystore.load_buyer_tls_pem(scratch, "dana")
    assert b"BEGIN CERTIFICATE" in ca and b"BEGIN CERTIFICATE" in certificate and b"PRIVATE KEY" in key
    (scratch / "buyers/dana/client.key").chmod(0o644)
    with pytest.raises(ConfigError, match=r"buyers/dana/client.key: secret file is accessible by group/others"):
        keystore.load_buyer_tls_pem(scratch, "dana")
    (scratch / "buyers/dana/client.key").chmod(0o600)
    other = tmp_path / "other"
    keystore.write_key_files(other, keystore.generate_key_files(ARTISTS, buyers=["dana"]))
    _replace(scratch, "ca.crt", (other / "ca.crt").read_bytes())  # a swapped trust anchor
    with pytest.raises(SecureAggregationError, match="ca.crt"):
        keystore.load_buyer_tls_pem(scratch, "dana")
    with pytest.raises(ConfigError, match="buyer 'zoe' is not in"):
        keystore.load_buyer_tls_pem(scratch, "zoe")


def test_missing_file_and_unknown_artist_are_config_errors(scratch: Path, tmp_path: Path) -> None:
    (scratch / "ca.crt").unlink()
    with pytest.raises(ConfigError, match="ca.crt: missing"):
        keystore.load_server_keys(scratch)
    with pytest.raises(ConfigError, match="'zoe' is not in this key set"):
        keystore.bundle_files(scratch, artist="zoe")
    assert main(["keys", "init", "--out", str(tmp_path / "k"), "--count", "0"]) == 2
    assert main(["keys", "init", "--out", str(tmp_path / "k"), "--artists", "alice,../evil"]) == 2
    assert not (tmp_path / "k").exists()


@pytest.mark.parametrize(
    ("field", "value", "expected"),
    [("artists", "alice bob carol", "a JSON list"), ("files", [], "a JSON dict"), ("bundle", "artist", "a JSON dict")],
)
def test_manifest_field_of_the_wrong_json_type_is_refused_by_name(
    scratch: Path, field: str, value: object, expected: str
) -> None:
    """A manifest whose roster is a string would otherwise pass ``"alice" in roster`` as a substring test."""
    manifest = json.loads((scratch / keystore.MANIFEST).read_text())
    manifest[field] = value
    (scratch / keystore.MANIFEST).write_text(json.dumps(manifest))
    with pytest.raises(ConfigError, match=f"manifest field '{field}' must be {expected}"):
        keystore.load_artist_keys(scratch, "alice")


@pytest.mark.parametrize("subject", ["alice\n", "alice\nbob", "", ".alice", "a" * 65, "al ice"])
def test_an_id_must_be_the_whole_string(subject: str) -> None:
    """Ids become file names and certificate URIs; ``$`` in the pattern admitted a final newline
    (``"alice\\n"`` passed, and a certificate for it mapped to ``alice``; red-team review, 2026-11-30)."""
    with pytest.raises(ConfigError, match="must be 1-64 characters"):
        pki.validate_subject_id(subject)
    assert pki.validate_subject_id("alice_01.x-y") == "alice_01.x-y"


def test_keys_check_checks_every_kind_of_bundle_by_its_own_manifest(tmp_path: Path, capsys) -> None:
    """`keys check --keys server-keys/` said "not a single artist's bundle; name the artist explicitly"
    (the fix, --server, went unsaid), and buyer and auditor bundles could not be checked at all (a
    helper's walkthrough, 2026-12-02).  A bundle now says whose it is; a full key set needs the machine named."""
    keys = tmp_path / "keys"
    assert main(["keys", "init", "--out", str(keys), "--artists", "alice,bob", "--buyers", "shop"]) == 0
    machines = {
        "server": ["--server"],
        "alice": ["--artist", "alice"],
        "shop": ["--buyer", "shop"],
        "audit": ["--auditor"],
    }
    for name, flags in machines.items():
        assert main(["keys", "bundle", "--keys", str(keys), *flags, "--out", str(tmp_path / name)]) == 0
    capsys.readouterr()
    expected = {
        "server": "server bundle OK: 2 artists",
        "alice": "artist bundle OK: alice",
        "shop": "buyer bundle OK: shop",
        "audit": "auditor bundle OK: identity public keys of 2 artists",
    }
    for name, words in expected.items():
        assert main(["keys", "check", "--keys", str(tmp_path / name)]) == 0
        assert words in capsys.readouterr().out
    assert main(["keys", "check", "--keys", str(keys)]) == 2
    assert "full key set: name the machine to check with --server" in capsys.readouterr().err
    assert main(["keys", "check", "--keys", str(keys), "--buyer", "shop"]) == 0


def test_keys_check_refuses_a_bundle_whose_manifest_names_another_role(tmp_path: Path, capsys) -> None:
    """The manifest is not signed: relabelled as an auditor's, an artist bundle with a garbage CKKS secret
    and no TLS key checked "auditor bundle OK" (a helper's red-team review, 2026-12-02)."""
    keys = tmp_path / "keys"
    assert main(["keys", "init", "--out", str(keys), "--artists", "alice,bob"]) == 0
    alice = tmp_path / "alice"
    assert main(["keys", "bundle", "--keys", str(keys), "--artist", "alice", "--out", str(alice)]) == 0
    manifest = json.loads((alice / keystore.MANIFEST).read_text())
    manifest["bundle"] = {"role": "auditor"}
    (alice / keystore.MANIFEST).write_text(json.dumps(manifest))
    (alice / keystore.CKKS_SECRET).write_bytes(b"garbage")
    capsys.readouterr()
    assert main(["keys", "check", "--keys", str(alice)]) == 2
    err = capsys.readouterr().err
    assert "its manifest names the role 'auditor', but the folder holds" in err and "ckks-secret.ctx" in err, err
