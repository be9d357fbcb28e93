"""On-disk key sets (``fedstyle keys``): layout, writing, per-machine bundles and validated loading.

Layout of a key set (a bundle uses the same relative paths, holding only its machine's files)::

    manifest.json                  ids, fingerprints, SHA-256 of every file, CKKS parameters
    KEYSET.md                      which file goes to which machine
    ca.crt                         trust anchor (everyone)
    ca.key              0600       CA signing key -- stays with the administrator, in no bundle
    server.crt, server.key (0600)  server TLS identity
    ckks-public.ctx                CKKS parameters without keys (server)
    ckks-secret.ctx     0600       CKKS secret context shared by all artists
    identity/<id>.pub              each artist's Ed25519 identity public key (server and artists)
    artists/<id>/client.crt        artist TLS client certificate
    artists/<id>/client.key  0600  its private key
    artists/<id>/identity.key 0600 its Ed25519 identity private key
    buyers/<id>/client.crt, client.key (0600)

Loading fails closed: a missing file or a file of the wrong kind raises :class:`ConfigError`;
a file whose SHA-256 differs from the manifest (tampered or from another key set), an expired
certificate, a certificate not issued by this CA, a key not matching its certificate or an
identity key not in the manifest raises :class:`SecureAggregationError`.  Every message names
the file.  The manifest itself is not signed: transfer bundles over an authenticated channel.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import itertools
import json
import os
import stat
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypedDict, TypeVar, cast

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from fedstyle_secure.errors import ConfigError, SecureAggregationError
from fedstyle_secure.files import read_json_bounded, read_regular_file, write_bytes_atomic
from fedstyle_secure.secure.ckks.primitives import CkksContext, CkksParams, CkksParamsJson
from fedstyle_secure.secure.keys import pki

FORMAT = "fedstyle-keys/1"
MANIFEST = "manifest.json"
README = "KEYSET.md"
CA_CERT = "ca.crt"
CA_KEY = "ca.key"
SERVER_CERT = "server.crt"
SERVER_KEY = "server.key"
CKKS_PUBLIC = "ckks-public.ctx"
CKKS_SECRET = "ckks-secret.ctx"
IDENTITY_DIR = "identity"
#: Most artists (and, apart, buyers) one key set holds: pairwise masking grows with the square of the
#: roster, and `keys init --count 10**9` would otherwise write files until the disk is full.
MAX_KEYSET_MEMBERS = 10_000
DEFAULT_SERVER_HOSTS: tuple[str, ...] = ("localhost", "127.0.0.1")

T = TypeVar("T")


class CkksManifest(TypedDict):
    """The manifest's CKKS entry: parameters, key id and fingerprint (hex) of the shared context."""

    params: CkksParamsJson
    key_id: str
    fingerprint: str


class BundleOwner(TypedDict, total=False):
    """Whose bundle a manifest describes: ``role`` (artist, server, buyer, auditor) and, for artists
    and buyers, ``id``."""

    role: str
    id: str


class KeyManifest(TypedDict):
    """``manifest.json`` of a key set or bundle (``bundle`` is ``None`` for the full key set)."""

    format: str
    created_utc: str
    artists: list[str]
    buyers: list[str]
    server_hosts: list[str]
    ca_fingerprint: str  # SHA-256 hex of the CA certificate
    identity_keys: dict[str, str]  # artist id -> identity key fingerprint
    ckks: CkksManifest
    bundle: BundleOwner | None
    files: dict[str, str]  # relative path -> SHA-256 hex


# the JSON type of every manifest field the loaders read (a bundle's "bundle" may be absent or null)
_MANIFEST_FIELDS: dict[str, tuple[type, ...]] = {
    "artists": (list,),
    "buyers": (list,),
    "server_hosts": (list,),
    "ca_fingerprint": (str,),
    "identity_keys": (dict,),
    "ckks": (dict,),
    "bundle": (dict, type(None)),
    "files": (dict,),
}


def identity_public_path(artist_id: str) -> str:
    return f"{IDENTITY_DIR}/{artist_id}.pub"


def client_cert_path(role: pki.Role, subject_id: str) -> str:
    return f"{role.value}s/{subject_id}/client.crt"


def client_key_path(role: pki.Role, subject_id: str) -> str:
    return f"{role.value}s/{subject_id}/client.key"


def identity_key_path(artist_id: str) -> str:
    return f"artists/{artist_id}/identity.key"


# --------------------------------------------------------------------------- generation (in memory)


def generate_key_files(
    artists: Sequence[str],
    *,
    server_hosts: Sequence[str] = DEFAULT_SERVER_HOSTS,
    buyers: Sequence[str] = (),
    ckks_params: CkksParams | None = None,
    now: dt.datetime | None = None,
    validity_days: int = pki.LEAF_VALIDITY_DAYS,
) -> dict[str, bytes]:
    """Every file of a fresh key set (relative path -> content), manifest and README included."""
    _check_roster(artists, buyers)
    ca = pki.generate_ca(now=now, validity_days=max(validity_days, pki.CA_VALIDITY_DAYS))
    server = pki.issue_server_certificate(ca, server_hosts, now=now, validity_days=validity_days)
    ckks = CkksContext.generate(ckks_params)
    files = {
        CA_CERT: pki.certificate_pem(ca.certificate),
        CA_KEY: pki.private_key_pem(ca.private_key),
        SERVER_CERT: pki.certificate_pem(server.certificate),
        SERVER_KEY: pki.private_key_pem(server.private_key),
        CKKS_PUBLIC: ckks.public().serialize(),
        CKKS_SECRET: ckks.serialize(),
    }
    identity_keys: dict[str, str] = {}
    for role, ids in ((pki.Role.ARTIST, artists), (pki.Role.BUYER, buyers)):
        for subject_id in ids:
            client = pki.issue_client_certificate(ca, subject_id, role, now=now, validity_days=validity_days)
            files[client_cert_path(role, subject_id)] = pki.certificate_pem(client.certificate)
            files[client_key_path(role, subject_id)] = pki.private_key_pem(client.private_key)
    for artist in artists:
        identity = pki.generate_identity_key()
        identity_keys[artist] = pki.identity_fingerprint(identity.public_key())
        files[identity_key_path(artist)] = pki.private_key_pem(identity)
        files[identity_public_path(artist)] = pki.public_key_pem(identity.public_key())
    manifest: KeyManifest = {
        "format": FORMAT,
        "created_utc": (now or dt.datetime.now(dt.timezone.utc)).isoformat(timespec="seconds"),
        "artists": list(artists),
        "buyers": list(buyers),
        "server_hosts": list(server_hosts),
        "ca_fingerprint": pki.certificate_fingerprint(ca.certificate),
        "identity_keys": identity_keys,
        "ckks": {"params": ckks.params.to_json(), "key_id": ckks.key_id.hex(), "fingerprint": ckks.fingerprint.hex()},
        "bundle": None,
        "files": {path: _sha256(data) for path, data in sorted(files.items())},
    }
    files[MANIFEST] = _manifest_bytes(manifest)
    files[README] = render_readme(manifest).encode()
    return files


def _check_roster(artists: Sequence[str], buyers: Sequence[str]) -> None:
    if not artists:
        raise ConfigError("a key set needs at least one artist")
    for role, members in (("artists", artists), ("buyers", buyers)):
        if len(members) > MAX_KEYSET_MEMBERS:
            raise ConfigError(f"a key set holds at most {MAX_KEYSET_MEMBERS} {role}, got {len(members)}")
    for subject_id in (*artists, *buyers):
        pki.validate_subject_id(subject_id)
    counts = Counter([*artists, *buyers])
    duplicates = sorted(i for i, n in counts.items() if n > 1)
    if duplicates:
        raise ConfigError(f"duplicate artist/buyer ids: {duplicates}")


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _manifest_bytes(manifest: Mapping[str, object]) -> bytes:
    return (json.dumps(manifest, indent=2, sort_keys=True) + "\n").encode()


# --------------------------------------------------------------------------- bundles


def bundle_paths(
    manifest: KeyManifest,
    *,
    artist: str | None = None,
    server: bool = False,
    buyer: str | None = None,
    auditor: bool = False,
) -> list[str]:
    """Relative paths one machine needs: exactly one of ``artist``, ``server``, ``buyer`` or ``auditor``
    (no secret: the CA certificate and every artist's identity public key, for ``fedstyle audit --keys``)."""
    if sum((artist is not None, server, buyer is not None, auditor)) != 1:
        raise ConfigError("choose exactly one of --artist NAME, --server, --buyer NAME or --auditor")
    artists = list(manifest["artists"])
    identities = [identity_public_path(a) for a in artists]
    if server:
        return [CA_CERT, SERVER_CERT, SERVER_KEY, CKKS_PUBLIC, *identities]
    if auditor:
        return [CA_CERT, *identities]
    if artist is not None:
        if artist not in artists:
            raise ConfigError(f"artist {artist!r} is not in this key set (artists: {artists})")
        role_files = [client_cert_path(pki.Role.ARTIST, artist), client_key_path(pki.Role.ARTIST, artist)]
        return [CA_CERT, *role_files, identity_key_path(artist), CKKS_SECRET, *identities]
    buyers = list(manifest["buyers"])
    if buyer is None or buyer not in buyers:
        raise ConfigError(f"buyer {buyer!r} is not in this key set (buyers: {buyers})")
    return [CA_CERT, client_cert_path(pki.Role.BUYER, buyer), client_key_path(pki.Role.BUYER, buyer)]


def bundle_files(
    keys_dir: Path, *, artist: str | None = None, server: bool = False, buyer: str | None = None, auditor: bool = False
) -> dict[str, bytes]:
    """Read (and integrity-check) the files of one machine's bundle from a full key set."""
    manifest = load_key_manifest(keys_dir)
    paths = bundle_paths(manifest, artist=artist, server=server, buyer=buyer, auditor=auditor)
    files: dict[str, bytes] = {}
    for relative in paths:
        data = _read(keys_dir / relative)
        _check_integrity(keys_dir, manifest, relative, data)
        files[relative] = data
    role = (
        {"role": "server"}
        if server
        else {"role": "auditor"}
        if auditor
        else {"role": "artist", "id": artist}
        if artist
        else {"role": "buyer", "id": buyer}
    )
    bundle_manifest = {**manifest, "bundle": role, "files": {p: manifest["files"][p] for p in sorted(paths)}}
    files[MANIFEST] = _manifest_bytes(bundle_manifest)
    return files


# --------------------------------------------------------------------------- file I/O


def write_key_files(out_dir: Path, files: Mapping[str, bytes]) -> None:
    """Write a key set or bundle into ``out_dir`` (must not already hold one); secrets get mode 0600.

    Threat model: another local user may have made ``out_dir`` (say under ``/tmp``) or planted files
    or links in it. A folder that exists is used only if it is a real directory owned by this user
    (else :class:`ConfigError`), and is then made 0700; every file is written to a fresh temporary
    file (``O_EXCL``, never through a link) and renamed over its name, so no planted file, link or
    descriptor opened on an earlier file ever receives a secret.  Every folder above it must be safe
    from other users too (:func:`_check_ancestors`): whoever may rename entries in a parent could
    swap the new folder for theirs between its check and the writes."""
    if (out_dir / MANIFEST).exists():
        raise ConfigError(f"{out_dir} already holds a key set ({MANIFEST} exists); choose an empty directory")
    _require_new_or_empty(out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    _check_ancestors(out_dir)
    _private_directory(out_dir)
    for relative, data in sorted(files.items()):
        for directory in reversed(Path(relative).parents[:-1]):
            _private_directory(out_dir / directory)
        _replace_file(out_dir / relative, data, 0o600 if is_secret_path(relative) else 0o644)


def _require_new_or_empty(out_dir: Path) -> None:
    """Refuse (:class:`ConfigError`) an existing folder that holds anything: secret keys never land
    among other files (a data set, a repository: `--out .`), and no folder of the user's is made
    private (0700) as a side effect."""
    if not out_dir.is_dir() or out_dir.is_symlink():
        return  # new (created here), or refused as not a real directory by _private_directory
    try:
        with os.scandir(out_dir) as listing:
            entries = sorted(entry.name for entry in itertools.islice(listing, 3))
    except OSError as exc:
        raise ConfigError(f"cannot list {out_dir}: {exc}") from None
    if entries:
        raise ConfigError(
            f"{out_dir} is not empty (it holds {', '.join(entries)}{', ...' if len(entries) == 3 else ''}); "
            "keys go into a new or empty folder, so secrets never mix with other files"
        )


def _check_ancestors(out_dir: Path) -> None:
    """Refuse (:class:`ConfigError`) an ``out_dir`` under a folder another user controls: every
    folder above it, as written and as resolved, must be owned by this user or root and not writable
    by group or others unless sticky (like ``/tmp``, where only an entry's owner may rename it), and
    every link on the way must be this user's or root's (its owner may point it elsewhere)."""
    written = Path(os.path.abspath(out_dir)).parents
    resolved = out_dir.parent.resolve()
    for ancestor in [*written, resolved, *resolved.parents]:
        info = os.lstat(ancestor)
        trusted_owner = info.st_uid in (os.geteuid(), 0)
        if stat.S_ISLNK(info.st_mode):
            safe = trusted_owner
        else:
            shared = info.st_mode & (stat.S_IWGRP | stat.S_IWOTH) and not info.st_mode & stat.S_ISVTX
            safe = trusted_owner and not shared
        if not safe:
            raise ConfigError(
                f"{ancestor} (above {out_dir}) is owned by uid {info.st_uid} or writable by others "
                f"(mode {stat.S_IMODE(info.st_mode):o}): another user could swap the key folder; choose a "
                "directory under folders only you or root control"
            )


def _private_directory(path: Path) -> None:
    """Create ``path`` with mode 0700, or take an existing real directory this user owns and make it 0700."""
    try:
        path.mkdir(mode=0o700)
    except FileExistsError:
        info = os.lstat(path)
        if not stat.S_ISDIR(info.st_mode) or info.st_uid != os.geteuid():
            raise ConfigError(
                f"{path} exists but is not a directory owned by this user (uid {os.geteuid()}); key files written "
                "there could be read or replaced by its owner: choose a new directory"
            ) from None
    os.chmod(path, 0o700)


def _replace_file(path: Path, data: bytes, mode: int) -> None:
    try:
        write_bytes_atomic(path, data, mode=mode)
    except OSError as exc:
        raise ConfigError(f"{path}: cannot write: {exc}") from exc


MAX_MANIFEST_BYTES = 64 * 1024 * 1024
"""The largest key manifest read (bytes): ~570 bytes an artist, so 65,535 artists (the most a masking
message addresses) write ~37 MB."""


def load_key_manifest(keys_dir: Path) -> KeyManifest:
    path = keys_dir / MANIFEST
    try:
        manifest = read_json_bounded(path, MAX_MANIFEST_BYTES)
    except FileNotFoundError as exc:
        raise ConfigError(f"{path}: missing; is {keys_dir} a key set or bundle made by `fedstyle keys`?") from exc
    except (OSError, ValueError) as exc:
        raise ConfigError(f"{path}: unreadable manifest: {exc}") from exc
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise ConfigError(f"{path}: not a {FORMAT} manifest")
    for name, kinds in _MANIFEST_FIELDS.items():
        if not isinstance(manifest.get(name), kinds):
            expected = " or ".join("null" if kind is type(None) else f"a JSON {kind.__name__}" for kind in kinds)
            raise ConfigError(f"{path}: manifest field {name!r} must be {expected}")
    for name in ("artists", "buyers", "server_hosts"):
        if not all(isinstance(item, str) for item in manifest[name]):
            raise ConfigError(f"{path}: manifest field {name!r} must be a list of strings")
    for name in ("identity_keys", "files"):
        if not all(isinstance(value, str) for value in manifest[name].values()):
            raise ConfigError(f"{path}: manifest field {name!r} must map names to strings")
    return cast(KeyManifest, manifest)


def is_secret_path(relative: str) -> bool:
    """Private keys and the CKKS secret context: written 0600 and refused when group/world accessible."""
    return relative.endswith(".key") or relative == CKKS_SECRET


MAX_KEY_FILE_BYTES = 256 << 20
"""Largest key file read (bytes): a CKKS secret context is about 0.2 MB, one with Galois keys tens of MB."""


def _read(path: Path) -> bytes:
    try:
        return read_regular_file(path, MAX_KEY_FILE_BYTES)
    except FileNotFoundError as exc:
        raise ConfigError(f"{path}: missing from the key bundle") from exc
    except ValueError as exc:  # a FIFO or a device (a link to /dev/zero was read without end), too large
        raise ConfigError(f"unreadable key file: {exc}") from exc
    except OSError as exc:
        raise ConfigError(f"{path}: unreadable: {exc}") from exc


def _check_integrity(keys_dir: Path, manifest: KeyManifest, relative: str, data: bytes) -> None:
    """The file must be listed in the manifest with exactly this SHA-256."""
    expected = manifest["files"].get(relative)
    if expected is None:
        raise SecureAggregationError(f"{keys_dir / relative}: not listed in {keys_dir / MANIFEST}")
    if _sha256(data) != expected:
        raise SecureAggregationError(
            f"{keys_dir / relative}: SHA-256 differs from {keys_dir / MANIFEST} (tampered, or from another key set)"
        )


def _check_private_mode(path: Path) -> None:
    mode = stat.S_IMODE(path.stat().st_mode)
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise ConfigError(f"{path}: secret file is accessible by group/others (mode {mode:04o}); chmod 600 it")


def _load(keys_dir: Path, manifest: KeyManifest, relative: str, parse: Callable[[bytes, str], T]) -> T:
    """Parse first (so a wrong kind of file gets a precise message), then check integrity."""
    path = keys_dir / relative
    data = _read(path)
    if is_secret_path(relative):
        _check_private_mode(path)
    parsed = parse(data, str(path))
    _check_integrity(keys_dir, manifest, relative, data)
    return parsed


# --------------------------------------------------------------------------- loading


@dataclass(frozen=True, kw_only=True)
class MachineKeys:
    """What every machine of a deployment holds: its TLS identity, the trust anchor, peers' identity keys, CKKS."""

    artists: tuple[str, ...]
    ca_certificate: x509.Certificate
    certificate: x509.Certificate
    private_key: ec.EllipticCurvePrivateKey
    identity_public_keys: Mapping[str, Ed25519PublicKey]
    ckks: CkksContext
    manifest: KeyManifest = field(repr=False)

    def tls_pem(self) -> tuple[bytes, bytes, bytes]:
        """``(CA certificate, own certificate, own private key)`` as PEM, as gRPC credentials take them."""
        return (
            pki.certificate_pem(self.ca_certificate),
            pki.certificate_pem(self.certificate),
            pki.private_key_pem(self.private_key),
        )


@dataclass(frozen=True, kw_only=True)
class ServerKeys(MachineKeys):
    """The server's machine: its ``ckks`` context holds no secret key; no artist private key is present."""


@dataclass(frozen=True, kw_only=True)
class ArtistKeys(MachineKeys):
    """One artist's machine: ``ckks`` is the shared secret context; ``identity_key`` signs its messages."""

    artist_id: str
    identity_key: Ed25519PrivateKey


def load_artist_keys(keys_dir: Path, artist_id: str | None = None, *, now: dt.datetime | None = None) -> ArtistKeys:
    """Load and validate an artist bundle (or the artist's files of a full key set)."""
    keys_dir = Path(keys_dir)
    manifest = load_key_manifest(keys_dir)
    artist_id = artist_id or _bundle_owner(manifest, "artist", keys_dir)
    if artist_id not in manifest["artists"]:
        raise ConfigError(f"artist {artist_id!r} is not in {keys_dir / MANIFEST} (artists: {manifest['artists']})")
    cert_path, key_path = client_cert_path(pki.Role.ARTIST, artist_id), client_key_path(pki.Role.ARTIST, artist_id)
    common = _load_machine(keys_dir, manifest, cert_path, key_path, CKKS_SECRET, now)
    pki.verify_client_identity(common.certificate, pki.Role.ARTIST, artist_id, str(keys_dir / cert_path))
    identity_key = _load(keys_dir, manifest, identity_key_path(artist_id), pki.load_identity_private_key_pem)
    _check_identity(manifest, artist_id, identity_key.public_key(), keys_dir / identity_key_path(artist_id))
    return ArtistKeys(**vars(common), artist_id=artist_id, identity_key=identity_key)


def load_server_keys(keys_dir: Path, *, now: dt.datetime | None = None) -> ServerKeys:
    """Load and validate a server bundle (or the server's files of a full key set)."""
    keys_dir = Path(keys_dir)
    manifest = load_key_manifest(keys_dir)
    return ServerKeys(**vars(_load_machine(keys_dir, manifest, SERVER_CERT, SERVER_KEY, CKKS_PUBLIC, now)))


def _load_machine(
    keys_dir: Path,
    manifest: KeyManifest,
    cert_path: str,
    key_path: str,
    ckks_path: str,
    now: dt.datetime | None,
) -> MachineKeys:
    ca, certificate, private_key = _load_tls_identity(keys_dir, manifest, cert_path, key_path, now)
    return MachineKeys(
        artists=tuple(manifest["artists"]),
        ca_certificate=ca,
        certificate=certificate,
        private_key=private_key,
        identity_public_keys=_load_identity_publics(keys_dir, manifest),
        ckks=_load_ckks(keys_dir, manifest, ckks_path, secret=ckks_path == CKKS_SECRET),
        manifest=manifest,
    )


def _load_tls_identity(
    keys_dir: Path, manifest: KeyManifest, cert_path: str, key_path: str, now: dt.datetime | None
) -> tuple[x509.Certificate, x509.Certificate, ec.EllipticCurvePrivateKey]:
    """``(CA, certificate, private key)``: each file checked against the manifest (and a secret's mode),
    the certificate's chain and validity, and the key against the certificate."""
    ca = _load_ca(keys_dir, manifest, now)
    certificate = _load(keys_dir, manifest, cert_path, pki.load_certificate_pem)
    private_key = _load(keys_dir, manifest, key_path, pki.load_tls_private_key_pem)
    pki.verify_certificate(certificate, ca, str(keys_dir / cert_path), now=now)
    pki.verify_key_matches(certificate, private_key, str(keys_dir / key_path))
    return ca, certificate, private_key


def load_buyer_tls_pem(keys_dir: Path, buyer_id: str, *, now: dt.datetime | None = None) -> tuple[bytes, bytes, bytes]:
    """A buyer's ``(CA certificate, certificate, private key)`` PEM from its bundle or a full key set,
    validated as an artist's and the server's are (manifest SHA-256, the key's mode, chain, expiry,
    identity, key match) before any connection is made."""
    keys_dir = Path(keys_dir)
    manifest = load_key_manifest(keys_dir)
    if buyer_id not in manifest["buyers"]:
        raise ConfigError(f"buyer {buyer_id!r} is not in {keys_dir / MANIFEST} (buyers: {manifest['buyers']})")
    cert_path, key_path = client_cert_path(pki.Role.BUYER, buyer_id), client_key_path(pki.Role.BUYER, buyer_id)
    ca, certificate, private_key = _load_tls_identity(keys_dir, manifest, cert_path, key_path, now)
    pki.verify_client_identity(certificate, pki.Role.BUYER, buyer_id, str(keys_dir / cert_path))
    return pki.certificate_pem(ca), pki.certificate_pem(certificate), pki.private_key_pem(private_key)


def _bundle_owner(manifest: KeyManifest, role: str, keys_dir: Path) -> str:
    bundle = manifest.get("bundle") or BundleOwner()
    owner = bundle.get("id")
    if bundle.get("role") != role or owner is None:
        raise ConfigError(f"{keys_dir} is not a single {role}'s bundle; name the {role} explicitly")
    return str(owner)


def _load_ca(keys_dir: Path, manifest: KeyManifest, now: dt.datetime | None) -> x509.Certificate:
    ca = _load(keys_dir, manifest, CA_CERT, pki.load_certificate_pem)
    if pki.certificate_fingerprint(ca) != manifest["ca_fingerprint"]:
        raise SecureAggregationError(f"{keys_dir / CA_CERT}: not the CA named in {keys_dir / MANIFEST}")
    pki.verify_validity(ca, str(keys_dir / CA_CERT), now=now)
    return ca


def _check_identity(manifest: KeyManifest, artist_id: str, public_key: Ed25519PublicKey, path: Path) -> None:
    expected = manifest["identity_keys"].get(artist_id)
    if expected is None:
        raise SecureAggregationError(f"{path}: identity key of {artist_id!r}, who is not in the manifest")
    if pki.identity_fingerprint(public_key) != expected:
        raise SecureAggregationError(f"{path}: identity key of {artist_id!r} differs from the manifest's fingerprint")


def load_identity_keys(keys_dir: Path) -> dict[str, Ed25519PublicKey]:
    """Every artist's Ed25519 identity public key, in roster order, from a key set or any artist or server
    bundle (``identity/<id>.pub``), each checked against the manifest's SHA-256 and fingerprint: the
    keys ``fedstyle audit --keys`` verifies report signatures with."""
    keys_dir = Path(keys_dir)
    return _load_identity_publics(keys_dir, load_key_manifest(keys_dir))


def _load_identity_publics(keys_dir: Path, manifest: KeyManifest) -> dict[str, Ed25519PublicKey]:
    """Every artist's identity public key; an extra key for someone not in the manifest is an error."""
    present = sorted(p.stem for p in (keys_dir / IDENTITY_DIR).glob("*.pub"))
    for stranger in sorted(set(present) - set(manifest["artists"])):
        raise SecureAggregationError(
            f"{keys_dir / identity_public_path(stranger)}: identity key of {stranger!r}, who is not in the manifest"
        )
    publics = {}
    for artist in manifest["artists"]:
        relative = identity_public_path(artist)
        publics[artist] = _load(keys_dir, manifest, relative, pki.load_identity_public_key_pem)
        _check_identity(manifest, artist, publics[artist], keys_dir / relative)
    return publics


def _load_ckks(keys_dir: Path, manifest: KeyManifest, relative: str, *, secret: bool) -> CkksContext:
    path = keys_dir / relative
    # TenSEAL parses the key material on first use (a CKKS round): the header and the file's SHA-256 are checked here
    context = _load(keys_dir, manifest, relative, lambda data, what: CkksContext.load_deferred(data, what=what))
    if context.has_secret_key != secret:
        state = "holds" if context.has_secret_key else "lacks"
        raise SecureAggregationError(f"{path}: {state} the CKKS secret key, unlike what this file must be")
    if context.fingerprint.hex() != manifest["ckks"].get("fingerprint"):
        raise SecureAggregationError(f"{path}: CKKS parameters/key id differ from {keys_dir / MANIFEST}")
    return context


# --------------------------------------------------------------------------- README


def render_readme(manifest: KeyManifest) -> str:
    """The README placed next to a generated key set: which file goes to which machine."""
    artists = list(manifest["artists"])
    buyers = list(manifest["buyers"])
    lines = [
        "# fedstyle key set",
        "",
        f"Generated {manifest['created_utc']} by `fedstyle keys init`. Never commit or e-mail this folder:",
        "files marked *secret* are mode 0600 and must stay on the machine named below.",
        "Give each machine its own bundle (`fedstyle keys bundle --keys <this dir> --server|--artist NAME|--buyer "
        "NAME --out DIR`)",
        "and transfer it over an authenticated, encrypted channel.",
        "",
        "| file | goes to | secret |",
        "|---|---|---|",
        f"| `{MANIFEST}` | every machine (its bundle gets a filtered copy) | no |",
        f"| `{CA_CERT}` | every machine (trust anchor for mutual TLS) | no |",
        f"| `{CA_KEY}` | nobody: keep offline with the administrator (issues certificates) | **yes** |",
        f"| `{SERVER_CERT}`, `{SERVER_KEY}` | server (TLS, hosts: {', '.join(manifest['server_hosts'])}) | key: "
        "**yes** |",
        f"| `{CKKS_PUBLIC}` | server (CKKS parameters, no key: can add, cannot decrypt) | no |",
        f"| `{CKKS_SECRET}` | every artist (shared CKKS secret key), never the server | **yes** |",
        f"| `{IDENTITY_DIR}/<artist>.pub` | server, every artist and auditors (verify signed key advertisements and "
        "epsilon reports: `fedstyle keys bundle --auditor`) | no |",
        "| `artists/<artist>/client.crt`, `client.key` | that artist only (TLS client identity) | key: **yes** |",
        "| `artists/<artist>/identity.key` | that artist only (Ed25519 signing key) | **yes** |",
    ]
    if buyers:
        lines.append(
            "| `buyers/<buyer>/client.crt`, `client.key` | that buyer only (TLS client identity) | key: **yes** |"
        )
    lines += ["", f"Artists: {', '.join(artists)}."]
    if buyers:
        lines.append(f"Buyers: {', '.join(buyers)}.")
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------- revocation


def revoke(
    keys_dir: Path, role: pki.Role, subject_id: str, crl_path: Path, *, now: dt.datetime | None = None
) -> frozenset[int]:
    """Add ``subject_id``'s TLS certificate to the CA-signed CRL at ``crl_path`` (created if
    absent, its earlier entries kept); needs the full key set with the CA key.  Returns the
    revoked serials.  The server reads the CRL named by ``server.crl``."""
    keys_dir = Path(keys_dir)
    manifest = load_key_manifest(keys_dir)
    if CA_KEY not in manifest["files"]:
        raise ConfigError(f"{keys_dir} has no CA key: revoke with the administrator's full key set, not a bundle")
    ca = pki.IssuedCertificate(
        _load_ca(keys_dir, manifest, now), _load(keys_dir, manifest, CA_KEY, pki.load_tls_private_key_pem)
    )
    certificate = _load(keys_dir, manifest, client_cert_path(role, subject_id), pki.load_certificate_pem)
    # a stale but CA-signed list still carries its entries forward: re-issuing is how it gets fresh
    previous = pki.parse_crl(_read(crl_path), ca.certificate, str(crl_path)).serials if crl_path.exists() else set()
    data = pki.build_crl(ca, [certificate], previous=sorted(previous), now=now)
    crl_path.parent.mkdir(parents=True, exist_ok=True)
    _replace_file(crl_path, data, 0o644)
    return frozenset({*previous, certificate.serial_number})
