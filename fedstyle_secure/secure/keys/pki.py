"""Key generation and validation for mutual TLS and artist identities (pure: no file I/O).

* A private **CA** (ECDSA P-256) issues every certificate; it is the only trust anchor.
* The **server certificate** names the server's host names / IP addresses as SANs
  (``extendedKeyUsage = serverAuth``).
* A **client certificate** per artist (or buyer): ``CN = <id>`` and a URI SAN
  ``fedstyle://<role>/<id>`` (``extendedKeyUsage = clientAuth``); the server maps a TLS peer
  to an artist through these, never through anything the peer sends in-band.
* An **Ed25519 identity key** per artist signs key advertisements and epsilon reports; its
  public half goes to the server and every peer out of band (in the key bundles).

ECDSA P-256 is used for the TLS certificates because every gRPC TLS stack supports it.
Validation helpers raise :class:`SecureAggregationError` naming ``what`` was checked.
"""

from __future__ import annotations

import datetime as dt
import enum
import hashlib
import ipaddress
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TypeVar

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from fedstyle_secure.errors import ConfigError, SecureAggregationError

URI_SCHEME = "fedstyle"
CA_VALIDITY_DAYS = 3650
LEAF_VALIDITY_DAYS = 365
_CLOCK_SKEW = dt.timedelta(minutes=5)
_ID_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")  # whole string: fullmatch ($ would admit a final newline)


class Role(str, enum.Enum):
    """Who a client certificate belongs to (the URI SAN's authority part)."""

    ARTIST = "artist"
    BUYER = "buyer"


@dataclass(frozen=True)
class IssuedCertificate:
    """A certificate and its private key."""

    certificate: x509.Certificate
    private_key: ec.EllipticCurvePrivateKey


def validate_subject_id(subject_id: str) -> str:
    """Artist/buyer ids become file names and URIs: 1-64 of ``[A-Za-z0-9._-]``, not starting with a dot."""
    if not _ID_PATTERN.fullmatch(subject_id):
        raise ConfigError(
            f"id {subject_id!r} must be 1-64 characters of letters, digits, '.', '_', '-' and start with a letter or "
            "digit"
        )
    return subject_id


def client_uri(role: Role, subject_id: str) -> str:
    """The URI SAN of a client certificate, e.g. ``fedstyle://artist/artist_00``."""
    return f"{URI_SCHEME}://{role.value}/{subject_id}"


def _utcnow(now: dt.datetime | None) -> dt.datetime:
    return now if now is not None else dt.datetime.now(dt.timezone.utc)


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


MAX_VALIDITY_DAYS = 36_500  # 100 years; beyond datetime's range a certificate cannot be written


def _builder(
    subject: x509.Name, issuer: x509.Name, public_key: ec.EllipticCurvePublicKey, now: dt.datetime, days: int
) -> x509.CertificateBuilder:
    if not 1 <= days <= MAX_VALIDITY_DAYS:
        raise ConfigError(f"certificate validity (--days) must be 1 to {MAX_VALIDITY_DAYS} days, got {days}")
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - _CLOCK_SKEW)
        .not_valid_after(now + dt.timedelta(days=days))
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
    )


def _key_usage(*, signs_certificates: bool) -> x509.KeyUsage:
    """A CA signs certificates and CRLs only; a leaf signs TLS handshakes (ECDHE) only."""
    return x509.KeyUsage(
        digital_signature=not signs_certificates,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=signs_certificates,
        crl_sign=signs_certificates,
        encipher_only=False,
        decipher_only=False,
    )


def generate_ca(
    common_name: str = "fedstyle private CA", *, now: dt.datetime | None = None, validity_days: int = CA_VALIDITY_DAYS
) -> IssuedCertificate:
    """A self-signed CA that may sign leaf certificates only (``pathLen = 0``)."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = _name(common_name)
    certificate = (
        _builder(name, name, key.public_key(), _utcnow(now), validity_days)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(_key_usage(signs_certificates=True), critical=True)
        .sign(key, hashes.SHA256())
    )
    return IssuedCertificate(certificate, key)


def _issue_leaf(
    ca: IssuedCertificate,
    common_name: str,
    sans: Sequence[x509.GeneralName],
    usage: x509.ObjectIdentifier,
    now: dt.datetime | None,
    validity_days: int,
) -> IssuedCertificate:
    key = ec.generate_private_key(ec.SECP256R1())
    certificate = (
        _builder(_name(common_name), ca.certificate.subject, key.public_key(), _utcnow(now), validity_days)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(_key_usage(signs_certificates=False), critical=True)
        .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
        .add_extension(x509.SubjectAlternativeName(list(sans)), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca.private_key.public_key()), critical=False)
        .sign(ca.private_key, hashes.SHA256())
    )
    return IssuedCertificate(certificate, key)


def _host_name(host: str) -> x509.GeneralName:
    try:
        return x509.IPAddress(ipaddress.ip_address(host))
    except ValueError:
        if not re.fullmatch(r"[A-Za-z0-9*]([A-Za-z0-9.-]{0,251}[A-Za-z0-9])?", host):
            raise ConfigError(f"server host {host!r} is neither an IP address nor a DNS name") from None
        return x509.DNSName(host)


def issue_server_certificate(
    ca: IssuedCertificate,
    hosts: Sequence[str],
    *,
    now: dt.datetime | None = None,
    validity_days: int = LEAF_VALIDITY_DAYS,
) -> IssuedCertificate:
    """Server certificate valid for each of ``hosts`` (DNS names and/or IP addresses)."""
    if not hosts:
        raise ConfigError("the server certificate needs at least one host name or IP address")
    return _issue_leaf(
        ca, hosts[0], [_host_name(h) for h in hosts], ExtendedKeyUsageOID.SERVER_AUTH, now, validity_days
    )


def issue_client_certificate(
    ca: IssuedCertificate,
    subject_id: str,
    role: Role = Role.ARTIST,
    *,
    now: dt.datetime | None = None,
    validity_days: int = LEAF_VALIDITY_DAYS,
) -> IssuedCertificate:
    """Client certificate with ``CN = subject_id`` and URI SAN ``fedstyle://<role>/<subject_id>``."""
    validate_subject_id(subject_id)
    uri = x509.UniformResourceIdentifier(client_uri(role, subject_id))
    return _issue_leaf(ca, subject_id, [uri], ExtendedKeyUsageOID.CLIENT_AUTH, now, validity_days)


def generate_identity_key() -> Ed25519PrivateKey:
    """A long-term Ed25519 signing key (artist identity)."""
    return Ed25519PrivateKey.generate()


# --------------------------------------------------------------------------- fingerprints


def certificate_fingerprint(certificate: x509.Certificate) -> str:
    """SHA-256 of the DER encoding, hex."""
    return certificate.fingerprint(hashes.SHA256()).hex()


def identity_fingerprint(public_key: Ed25519PublicKey) -> str:
    """SHA-256 of the raw 32-byte Ed25519 public key, hex."""
    raw = public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()


# --------------------------------------------------------------------------- PEM encoding


def certificate_pem(certificate: x509.Certificate) -> bytes:
    return certificate.public_bytes(serialization.Encoding.PEM)


def private_key_pem(key: ec.EllipticCurvePrivateKey | Ed25519PrivateKey) -> bytes:
    """Unencrypted PKCS#8 PEM; the file holding it must be mode 0600."""
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def public_key_pem(key: Ed25519PublicKey) -> bytes:
    return key.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)


def _pem_label(data: bytes) -> str | None:
    match = re.search(rb"-----BEGIN ([A-Z0-9 ]+)-----", data)
    return match.group(1).decode() if match else None


def _expect_label(data: bytes, allowed: tuple[str, ...], expected: str, what: str) -> None:
    label = _pem_label(data)
    if label not in allowed:
        found = f"a PEM {label!r} block" if label else "no PEM block"
        raise ConfigError(f"{what}: expected {expected}, found {found}")


def load_certificate_pem(data: bytes, what: str) -> x509.Certificate:
    _expect_label(data, ("CERTIFICATE",), "a PEM certificate", what)
    try:
        return x509.load_pem_x509_certificate(data)
    except ValueError as exc:
        raise ConfigError(f"{what}: corrupt certificate: {exc}") from exc


def load_tls_private_key_pem(data: bytes, what: str) -> ec.EllipticCurvePrivateKey:
    key = _load_private_key(data, what)
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise ConfigError(f"{what}: expected an ECDSA TLS private key, found {type(key).__name__}")
    return key


def load_identity_private_key_pem(data: bytes, what: str) -> Ed25519PrivateKey:
    key = _load_private_key(data, what)
    if not isinstance(key, Ed25519PrivateKey):
        raise ConfigError(f"{what}: expected an Ed25519 identity private key, found {type(key).__name__}")
    return key


def _load_private_key(data: bytes, what: str) -> object:
    _expect_label(data, ("PRIVATE KEY",), "a PEM private key", what)
    try:
        return serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError) as exc:
        raise ConfigError(f"{what}: corrupt private key: {exc}") from exc


def load_identity_public_key_pem(data: bytes, what: str) -> Ed25519PublicKey:
    _expect_label(data, ("PUBLIC KEY",), "a PEM public key", what)
    try:
        key = serialization.load_pem_public_key(data)
    except ValueError as exc:
        raise ConfigError(f"{what}: corrupt public key: {exc}") from exc
    if not isinstance(key, Ed25519PublicKey):
        raise ConfigError(f"{what}: expected an Ed25519 identity public key, found {type(key).__name__}")
    return key


# --------------------------------------------------------------------------- validation


def verify_certificate(
    certificate: x509.Certificate, ca_certificate: x509.Certificate, what: str, *, now: dt.datetime | None = None
) -> None:
    """Raise unless ``certificate`` is signed by ``ca_certificate`` and both are currently valid."""
    verify_validity(ca_certificate, "CA certificate", now=now)
    try:
        certificate.verify_directly_issued_by(ca_certificate)
    except (ValueError, TypeError, InvalidSignature) as exc:
        raise SecureAggregationError(
            f"{what}: not signed by this key set's CA ({str(exc) or 'bad signature'})"
        ) from exc
    verify_validity(certificate, what, now=now)


def verify_validity(certificate: x509.Certificate, what: str, *, now: dt.datetime | None = None) -> None:
    moment = _utcnow(now)
    if moment < certificate.not_valid_before_utc:
        raise SecureAggregationError(f"{what}: not valid before {certificate.not_valid_before_utc:%Y-%m-%d %H:%M} UTC")
    if moment > certificate.not_valid_after_utc:
        raise SecureAggregationError(f"{what}: expired on {certificate.not_valid_after_utc:%Y-%m-%d %H:%M} UTC")


def verify_key_matches(certificate: x509.Certificate, private_key: ec.EllipticCurvePrivateKey, what: str) -> None:
    if certificate.public_key() != private_key.public_key():
        raise SecureAggregationError(f"{what}: private key does not match the certificate's public key")


_Extension = TypeVar("_Extension", bound=x509.ExtensionType)


def _extension(certificate: x509.Certificate, kind: type[_Extension], what: str) -> _Extension:
    try:
        return certificate.extensions.get_extension_for_class(kind).value
    except x509.ExtensionNotFound as exc:
        raise SecureAggregationError(f"{what}: missing {kind.__name__} extension") from exc


def _uri_sans(certificate: x509.Certificate, what: str) -> list[str]:
    sans = _extension(certificate, x509.SubjectAlternativeName, what)
    return list(sans.get_values_for_type(x509.UniformResourceIdentifier))


def verify_client_identity(certificate: x509.Certificate, role: Role, subject_id: str, what: str) -> None:
    """The certificate must name ``subject_id`` as CN and as URI SAN for ``role``, and allow clientAuth."""
    common_names = [a.value for a in certificate.subject.get_attributes_for_oid(NameOID.COMMON_NAME)]
    uris = _uri_sans(certificate, what)
    usages = _extension(certificate, x509.ExtendedKeyUsage, what)
    if common_names != [subject_id] or client_uri(role, subject_id) not in uris:
        raise SecureAggregationError(
            f"{what}: issued to CN={common_names}, URIs={uris}, not to {role.value} {subject_id!r}"
        )
    if ExtendedKeyUsageOID.CLIENT_AUTH not in usages:
        raise SecureAggregationError(f"{what}: not a TLS client certificate (no clientAuth usage)")


def client_identity(certificate: x509.Certificate) -> tuple[Role, str]:
    """``(role, id)`` from a client certificate's ``fedstyle://`` URI SAN (what the TLS server trusts)."""
    uris = _uri_sans(certificate, "client certificate")
    for uri in uris:
        match = re.fullmatch(rf"{URI_SCHEME}://(artist|buyer)/(.+)", uri)
        if match:
            return Role(match.group(1)), validate_subject_id(match.group(2))
    raise SecureAggregationError(f"client certificate has no {URI_SCHEME}:// URI SAN (found {uris})")


# --------------------------------------------------------------------------- revocation


CRL_VALIDITY_DAYS = 30  # a CRL must be re-issued (``fedstyle keys revoke``) before it goes stale


def build_crl(
    ca: IssuedCertificate,
    revoked: Sequence[x509.Certificate],
    *,
    previous: Sequence[int] = (),
    now: dt.datetime | None = None,
    validity_days: int = CRL_VALIDITY_DAYS,
) -> bytes:
    """A PEM X.509 CRL signed by ``ca`` listing ``revoked`` certificates plus ``previous`` serials."""
    moment = _utcnow(now)
    builder = (
        x509.CertificateRevocationListBuilder()
        .issuer_name(ca.certificate.subject)
        .last_update(moment)
        .next_update(moment + dt.timedelta(days=validity_days))
    )
    for serial in sorted({*previous, *(c.serial_number for c in revoked)}):
        builder = builder.add_revoked_certificate(
            x509.RevokedCertificateBuilder().serial_number(serial).revocation_date(moment).build()
        )
    return builder.sign(ca.private_key, hashes.SHA256()).public_bytes(serialization.Encoding.PEM)


@dataclass(frozen=True)
class RevocationList:
    """A CA-verified CRL: the revoked serial numbers and when the list goes stale (UTC)."""

    serials: frozenset[int]
    next_update: dt.datetime

    def check_fresh(self, what: str, *, now: dt.datetime | None = None) -> None:
        """Raise :class:`SecureAggregationError` once ``now`` is past ``next_update`` (fail closed:
        a stale list may miss recent revocations)."""
        if _utcnow(now) > self.next_update:
            raise SecureAggregationError(
                f"{what}: stale since {self.next_update:%Y-%m-%d %H:%M} UTC; re-issue it with `fedstyle keys revoke`"
            )


def parse_crl(crl_pem: bytes, ca_certificate: x509.Certificate, what: str) -> RevocationList:
    """A CRL after checking it is signed by the CA and says when it goes stale (freshness is
    :meth:`RevocationList.check_fresh`, to be checked at every use)."""
    try:
        crl = x509.load_pem_x509_crl(crl_pem)
    except ValueError as exc:
        raise SecureAggregationError(f"{what}: not a PEM certificate revocation list ({exc})") from exc
    ca_key = ca_certificate.public_key()
    if not isinstance(ca_key, ec.EllipticCurvePublicKey):  # generate_ca makes ECDSA P-256 CAs only
        raise SecureAggregationError(f"{what}: the CA's key is a {type(ca_key).__name__}, not an EC key")
    if crl.issuer != ca_certificate.subject or not crl.is_signature_valid(ca_key):
        raise SecureAggregationError(f"{what}: not signed by this key set's CA (tampered or foreign)")
    if crl.next_update_utc is None:
        raise SecureAggregationError(
            f"{what}: has no next update time, so its staleness cannot be told; re-issue it with `fedstyle keys revoke`"
        )
    return RevocationList(frozenset(entry.serial_number for entry in crl), crl.next_update_utc)


def revoked_serials(
    crl_pem: bytes, ca_certificate: x509.Certificate, what: str, *, now: dt.datetime | None = None
) -> frozenset[int]:
    """Serial numbers a CRL revokes, after checking it is signed by the CA and not stale.

    Fails closed: an unreadable, foreign, tampered or expired CRL raises
    :class:`SecureAggregationError` rather than revoking nothing.
    """
    crl = parse_crl(crl_pem, ca_certificate, what)
    crl.check_fresh(what, now=now)
    return crl.serials
