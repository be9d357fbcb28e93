"""Mutual-TLS identities: credentials for both ends and the caller's ``(role, id)`` of a call.

Threat model: the federation CA (offline, ``fedstyle keys init``) is the only trust anchor;
the TLS layer refuses any client without a certificate it issued.  The servicer then trusts
only the certificate's ``fedstyle://<role>/<id>`` URI SAN, never ids claimed in messages.
"""

from __future__ import annotations

import datetime as dt
import logging
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import grpc
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from fedstyle_secure.errors import SecureAggregationError
from fedstyle_secure.federation.rejections import Forbidden, NotAuthenticated
from fedstyle_secure.files import read_regular_file
from fedstyle_secure.secure.keys import pki
from fedstyle_secure.secure.keys.keystore import MachineKeys

REGISTER_CONTEXT = b"fedstyle.v1/register"
MAX_CRL_BYTES = 64 << 20  # a CRL of a million revoked serials is about 40 MB
SESSION_METADATA = "fedstyle-session"
log = logging.getLogger(__name__)


def server_credentials(keys: MachineKeys) -> grpc.ServerCredentials:
    """TLS server credentials that *require* a client certificate issued by the federation CA."""
    ca, cert, key = keys.tls_pem()
    return grpc.ssl_server_credentials([(key, cert)], root_certificates=ca, require_client_auth=True)


def channel_credentials(tls_pem: tuple[bytes, bytes, bytes]) -> grpc.ChannelCredentials:
    """TLS client credentials from ``(CA, certificate, key)`` PEM, trusting only the federation CA."""
    ca, cert, key = tls_pem
    return grpc.ssl_channel_credentials(root_certificates=ca, private_key=key, certificate_chain=cert)


@dataclass(frozen=True)
class Caller:
    role: pki.Role
    subject_id: str


class Revocations:
    """The CA-signed certificate revocation list at ``path`` (``fedstyle keys revoke``), re-read
    whenever the file changes, its freshness checked at every call against ``clock`` (Unix
    seconds).  Fails closed: while the file is missing, tampered, foreign or stale -- also when
    it goes stale while the server runs -- every call is refused (a broken or outdated CRL must
    not silently revoke nothing), until a fresh CRL is installed."""

    def __init__(self, path: Path, ca_certificate: x509.Certificate, clock: Callable[[], float] = time.time) -> None:
        self.path, self.ca_certificate, self.clock = Path(path), ca_certificate, clock
        self._lock = threading.Lock()
        self._stamp: tuple[int, int] | None = None
        self._crl: pki.RevocationList | None = None
        self._error: str | None = None
        self._stale_logged: tuple[int, int] | None = None
        self.serials()  # validate now, so a bad CRL stops the server at start

    def serials(self) -> frozenset[int]:
        """Revoked serial numbers; raises :class:`SecureAggregationError` if the CRL is unusable or stale."""
        what = f"server.crl {self.path}"
        with self._lock:
            try:
                stat = self.path.stat()
                stamp = (stat.st_mtime_ns, stat.st_size)
            except OSError as exc:
                raise SecureAggregationError(f"{what}: unreadable: {exc.strerror or exc}") from exc
            if stamp != self._stamp:
                self._stamp, self._crl, self._error = stamp, None, None
                try:
                    self._crl = pki.parse_crl(read_regular_file(self.path, MAX_CRL_BYTES), self.ca_certificate, what)
                except (OSError, ValueError, SecureAggregationError) as exc:
                    self._error = str(exc)
            if self._crl is None:
                raise SecureAggregationError(self._error or f"{what}: unreadable")
            try:
                self._crl.check_fresh(what, now=dt.datetime.fromtimestamp(self.clock(), dt.timezone.utc))
            except SecureAggregationError as exc:
                if self._stale_logged != stamp:  # once per installed file, not per call
                    self._stale_logged = stamp
                    log.error("refusing every call: %s", exc)
                raise
            return self._crl.serials

    def check(self, certificate: x509.Certificate, subject_id: str) -> None:
        try:
            revoked = certificate.serial_number in self.serials()
        except SecureAggregationError as exc:
            raise Forbidden(f"refusing every call until the revocation list is fixed: {exc}") from exc
        if revoked:
            raise Forbidden(f"certificate of {subject_id!r} (serial {certificate.serial_number:x}) is revoked")


def caller_of(context: grpc.ServicerContext, revocations: Revocations | None = None) -> Caller:
    """The verified peer certificate's identity, unless revoked; raises :class:`NotAuthenticated`
    or :class:`Forbidden` (revoked)."""
    pems = context.auth_context().get("x509_pem_cert")
    if not pems:
        raise NotAuthenticated("no client certificate on this connection (mutual TLS required)")
    try:
        certificate = x509.load_pem_x509_certificate(pems[0])
        role, subject_id = pki.client_identity(certificate)
    except (ValueError, SecureAggregationError) as exc:
        raise NotAuthenticated(f"client certificate carries no federation identity: {exc}") from exc
    if revocations is not None:
        revocations.check(certificate, subject_id)
    return Caller(role, subject_id)


def require_role(caller: Caller, role: pki.Role, rpc: str) -> None:
    if caller.role is not role:
        raise Forbidden(f"{caller.role.value} certificate {caller.subject_id!r} may not call {rpc}")


def registration_payload(artist_id: str, nonce: bytes) -> bytes:
    return REGISTER_CONTEXT + b"\0" + artist_id.encode() + b"\0" + nonce


def sign_registration(key: Ed25519PrivateKey, artist_id: str, nonce: bytes) -> bytes:
    return key.sign(registration_payload(artist_id, nonce))


def verify_registration(public: Ed25519PublicKey, artist_id: str, nonce: bytes, signature: bytes) -> None:
    """The claimed artist holds the roster's identity key; raises :class:`Forbidden`."""
    if len(nonce) < 16:
        raise Forbidden("registration nonce must be at least 16 random bytes")
    try:
        public.verify(signature, registration_payload(artist_id, nonce))
    except InvalidSignature as exc:
        raise Forbidden(f"registration signature does not verify under {artist_id}'s identity key") from exc


def new_session_token() -> str:
    return secrets.token_urlsafe(24)
