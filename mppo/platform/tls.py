"""Mutual TLS between our processes: a development PKI, credentials, the verified caller.

Every process (service, gateway, worker, operator tool) holds a certificate signed by one CA.
Its identity is the URI SAN ``spiffe://mppo/<name>`` (also ``CN=<name>``); a server requires
and verifies the client's certificate, so a caller's service name comes from the handshake and
never from metadata. Certificates carry DNS SANs ``localhost`` and ``<name>`` and IP SANs
``127.0.0.1`` and ``::1``: a client dialing ``127.0.0.1:<port>`` verifies the server's
certificate against its address without any server-name override. Each certificate is both a
server and a client certificate (ExtendedKeyUsage serverAuth + clientAuth).

API::

    mint_dev_pki(directory, names)      # ca.pem/ca.key, <name>.pem/<name>.key, user-token.key/.pub
    material = TlsMaterial.from_env(os.environ, "group")   # None when TLS is not configured
    server.add_secure_port(addr, server_credentials(material))     # requires client certs
    grpc.aio.secure_channel(target, channel_credentials(material)) # presents our cert
    peer_service(context)               # "payment" for a caller holding payment's cert, else None

Configuration (:meth:`TlsMaterial.from_env`): ``MPPO_TLS_CA_FILE``, ``MPPO_TLS_CERT_FILE`` and
``MPPO_TLS_KEY_FILE`` (mounted secrets in compose/Kubernetes; all three or none), else
``MPPO_TLS_DIR`` holding ``ca.pem``, ``<name>.pem`` and ``<name>.key`` (what
:func:`mint_dev_pki` writes; ``mppo dev up`` mints into ``<state dir>/pki`` and sets it).

What grpcio (1.85.3, checked by experiment) puts in ``context.auth_context()`` on a server
with ``require_client_auth=True`` (values are lists of bytes)::

    transport_security_type        [b"ssl"]
    security_level                 [b"TSI_PRIVACY_AND_INTEGRITY"]
    x509_subject                   [b"CN=payment,O=MPPO development"]
    x509_common_name               [b"payment"]
    x509_pem_cert                  [b"-----BEGIN CERTIFICATE-----\\n..."]
    x509_subject_alternative_name  [b"spiffe://mppo/payment", b"localhost", b"payment",
                                    b"127.0.0.1", b"::1"]   (URI, DNS and IP SANs, mixed)
    peer_uri                       [b"spiffe://mppo/payment"]
    peer_dns                       [b"localhost", b"payment"]
    peer_ip                        [b"127.0.0.1", b"::1"]
    peer_spiffe_id                 [b"spiffe://mppo/payment"]
    ssl_session_reused             [b"false"]
    ssl_tls_version                [b"TLSv1.3"]
    ssl_negotiated_key_exchange_group  [b"X25519MLKEM768"]

and ``context.peer_identity_key()`` is ``"x509_subject_alternative_name"`` — so
``peer_identities()`` mixes DNS names and the SPIFFE URI and is not an identity on its own.
:func:`peer_service` reads ``peer_spiffe_id`` (set by gRPC only for a single, well-formed URI
SAN) and falls back to parsing ``x509_pem_cert``; it never trusts the common name alone.
Over an insecure port the context says ``transport_security_type: [b"insecure"]`` and
:func:`peer_service` returns None.
"""

from __future__ import annotations

import contextlib
import datetime
import fcntl
import ipaddress
import os
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

__all__ = [
    "CA_CERT_FILE",
    "CA_KEY_FILE",
    "DEV_NAMES",
    "ENV_TLS_CA_FILE",
    "ENV_TLS_CERT_FILE",
    "ENV_TLS_DIR",
    "ENV_TLS_KEY_FILE",
    "SPIFFE_TRUST_DOMAIN",
    "USER_TOKEN_PRIVATE_FILE",
    "USER_TOKEN_PUBLIC_FILE",
    "TlsConfigError",
    "TlsMaterial",
    "channel_credentials",
    "mint_dev_pki",
    "peer_service",
    "server_credentials",
    "service_from_auth_context",
    "service_from_certificate",
    "spiffe_id",
]

ENV_TLS_DIR = "MPPO_TLS_DIR"
ENV_TLS_CA_FILE = "MPPO_TLS_CA_FILE"
ENV_TLS_CERT_FILE = "MPPO_TLS_CERT_FILE"
ENV_TLS_KEY_FILE = "MPPO_TLS_KEY_FILE"

CA_CERT_FILE = "ca.pem"
CA_KEY_FILE = "ca.key"
USER_TOKEN_PRIVATE_FILE = "user-token.key"
USER_TOKEN_PUBLIC_FILE = "user-token.pub"

SPIFFE_TRUST_DOMAIN = "mppo"
_SPIFFE_PREFIX = f"spiffe://{SPIFFE_TRUST_DOMAIN}/"

DEV_NAMES: tuple[str, ...] = (
    "group",
    "payment",
    "order",
    "notification",
    "gateway",
    "worker",
    "operator",
)
"""The identities ``mppo dev up`` mints: the services, the gateway, workers, the operator."""

_ORGANIZATION = "MPPO development"
_CA_VALIDITY = datetime.timedelta(days=3650)
_LEAF_VALIDITY = datetime.timedelta(days=825)
_RENEW_BEFORE = datetime.timedelta(days=7)
_LOCK_FILE = ".lock"


class TlsConfigError(ValueError):
    """TLS settings are incomplete or point at missing/unreadable files."""


def spiffe_id(name: str) -> str:
    """``spiffe://mppo/<name>``: the identity a certificate for ``name`` carries."""
    return f"{_SPIFFE_PREFIX}{name}"


def _check_name(name: str) -> None:
    if not name or len(name) > 63 or not all(c.isalnum() or c in "-_" for c in name):
        raise ValueError(f"invalid identity name {name!r} (letters, digits, '-', '_')")
    if not name.isascii() or name.startswith("-"):
        raise ValueError(f"invalid identity name {name!r}")


# ---------------------------------------------------------------- development PKI


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


def _write_atomic(path: Path, data: bytes, mode: int) -> None:
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "wb") as out:
        out.write(data)
    os.chmod(tmp, mode)  # the umask may have narrowed or the file pre-existed
    os.replace(tmp, path)


def _key_pem(key: ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _fresh(cert: x509.Certificate) -> bool:
    now = _now()
    return cert.not_valid_before_utc <= now and cert.not_valid_after_utc - _RENEW_BEFORE > now


def _same_public_key(cert: x509.Certificate, key: Any) -> bool:
    fmt = serialization.PublicFormat.SubjectPublicKeyInfo
    der = serialization.Encoding.DER
    return bool(cert.public_key().public_bytes(der, fmt) == key.public_key().public_bytes(der, fmt))


def _load_pair(cert_path: Path, key_path: Path) -> tuple[x509.Certificate, Any] | None:
    """The certificate and key at these paths when both parse and match, else None."""
    try:
        cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
        key = serialization.load_pem_private_key(key_path.read_bytes(), None)
    except (OSError, ValueError, TypeError):
        return None
    if not _same_public_key(cert, key):
        return None
    return cert, key


def _load_ca(directory: Path) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey] | None:
    pair = _load_pair(directory / CA_CERT_FILE, directory / CA_KEY_FILE)
    if pair is None:
        return None
    cert, key = pair
    if not isinstance(key, ec.EllipticCurvePrivateKey) or not _fresh(cert):
        return None
    try:
        basic = cert.extensions.get_extension_for_class(x509.BasicConstraints).value
    except x509.ExtensionNotFound:
        return None
    return (cert, key) if basic.ca else None


def _new_ca(directory: Path) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, _ORGANIZATION),
            x509.NameAttribute(NameOID.COMMON_NAME, "MPPO development CA"),
        ]
    )
    now = _now()
    ski = x509.SubjectKeyIdentifier.from_public_key(key.public_key())
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + _CA_VALIDITY)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(ski, critical=False)
        .sign(key, hashes.SHA256())
    )
    _write_atomic(directory / CA_KEY_FILE, _key_pem(key), 0o600)
    _write_atomic(directory / CA_CERT_FILE, cert.public_bytes(serialization.Encoding.PEM), 0o644)
    return cert, key


def _leaf_ok(directory: Path, name: str, ca: x509.Certificate) -> bool:
    pair = _load_pair(directory / f"{name}.pem", directory / f"{name}.key")
    if pair is None:
        return False
    cert, _ = pair
    try:
        cert.verify_directly_issued_by(ca)
    except (ValueError, TypeError, InvalidSignature):
        return False
    return _fresh(cert) and service_from_certificate(cert) == name


def _new_leaf(
    directory: Path, name: str, ca_cert: x509.Certificate, ca_key: ec.EllipticCurvePrivateKey
) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    now = _now()
    sans: list[x509.GeneralName] = [
        x509.UniformResourceIdentifier(spiffe_id(name)),
        x509.DNSName("localhost"),
        x509.DNSName(name),
        x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
        x509.IPAddress(ipaddress.ip_address("::1")),
    ]
    cert = (
        x509.CertificateBuilder()
        .subject_name(
            x509.Name(
                [
                    x509.NameAttribute(NameOID.ORGANIZATION_NAME, _ORGANIZATION),
                    x509.NameAttribute(NameOID.COMMON_NAME, name),
                ]
            )
        )
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + _LEAF_VALIDITY)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=True,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(
            x509.ExtendedKeyUsage(
                [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
            ),
            critical=False,
        )
        .add_extension(x509.SubjectAlternativeName(sans), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )
    _write_atomic(directory / f"{name}.key", _key_pem(key), 0o600)
    _write_atomic(directory / f"{name}.pem", cert.public_bytes(serialization.Encoding.PEM), 0o644)


def _ensure_user_token_keys(directory: Path) -> None:
    private_path = directory / USER_TOKEN_PRIVATE_FILE
    public_path = directory / USER_TOKEN_PUBLIC_FILE
    with contextlib.suppress(OSError, ValueError, TypeError):
        private = serialization.load_pem_private_key(private_path.read_bytes(), None)
        public = serialization.load_pem_public_key(public_path.read_bytes())
        if isinstance(private, ed25519.Ed25519PrivateKey) and private.public_key() == public:
            return
    key = ed25519.Ed25519PrivateKey.generate()
    public_pem = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    _write_atomic(private_path, _key_pem(key), 0o600)
    _write_atomic(public_path, public_pem, 0o644)


@contextlib.contextmanager
def _locked(directory: Path) -> Iterator[None]:
    fd = os.open(directory / _LOCK_FILE, os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # releases the lock


def mint_dev_pki(directory: Path, names: Sequence[str]) -> None:
    """Create (or complete) a development PKI in ``directory``.

    Writes ``ca.pem``/``ca.key``, ``<name>.pem``/``<name>.key`` for every name, and the
    gateway's user-token key pair ``user-token.key``/``user-token.pub`` (Ed25519). Idempotent:
    material that is present, parses, matches and is not about to expire is kept; missing
    names are added. A new CA (the old one missing, broken or expiring) re-issues every
    certificate. Private keys are mode 0600. Safe to call from concurrent processes.
    """
    for name in names:
        _check_name(name)
    directory.mkdir(parents=True, exist_ok=True)
    with _locked(directory):
        ca = _load_ca(directory)
        if ca is None:
            ca = _new_ca(directory)
        ca_cert, ca_key = ca
        for name in dict.fromkeys(names):
            if not _leaf_ok(directory, name, ca_cert):
                _new_leaf(directory, name, ca_cert, ca_key)
        _ensure_user_token_keys(directory)


# ---------------------------------------------------------------- credentials


@dataclass(frozen=True)
class TlsMaterial:
    """What one process needs for mTLS: the CA it trusts, its certificate chain and key (PEM)."""

    ca_pem: bytes
    cert_pem: bytes
    key_pem: bytes

    @classmethod
    def load(cls, directory: Path, name: str) -> TlsMaterial:
        """``ca.pem``, ``<name>.pem`` and ``<name>.key`` from ``directory``."""
        _check_name(name)
        return cls.from_files(
            directory / CA_CERT_FILE, directory / f"{name}.pem", directory / f"{name}.key"
        )

    @classmethod
    def from_files(cls, ca_file: Path, cert_file: Path, key_file: Path) -> TlsMaterial:
        """Read the three PEM files; TlsConfigError when one is missing or not PEM."""
        contents = []
        for path in (ca_file, cert_file, key_file):
            try:
                data = path.read_bytes()
            except OSError as exc:
                raise TlsConfigError(f"cannot read TLS file {path}: {exc.strerror}") from exc
            if b"-----BEGIN " not in data:
                raise TlsConfigError(f"{path} is not a PEM file")
            contents.append(data)
        return cls(ca_pem=contents[0], cert_pem=contents[1], key_pem=contents[2])

    @classmethod
    def from_env(cls, env: Mapping[str, str], name: str) -> TlsMaterial | None:
        """The material configured in ``env`` for the process ``name``; None without TLS.

        ``MPPO_TLS_CA_FILE`` + ``MPPO_TLS_CERT_FILE`` + ``MPPO_TLS_KEY_FILE`` (all three), else
        ``MPPO_TLS_DIR`` (``ca.pem``, ``<name>.pem``, ``<name>.key``). TlsConfigError when
        only some of the three files are named or a file cannot be read.
        """
        files = [env.get(key, "").strip() for key in _FILE_KEYS]
        if any(files):
            missing = [key for key, value in zip(_FILE_KEYS, files, strict=True) if not value]
            if missing:
                raise TlsConfigError(f"incomplete TLS settings: {', '.join(missing)} not set")
            return cls.from_files(Path(files[0]), Path(files[1]), Path(files[2]))
        directory = env.get(ENV_TLS_DIR, "").strip()
        if not directory:
            return None
        return cls.load(Path(directory), name)


_FILE_KEYS = (ENV_TLS_CA_FILE, ENV_TLS_CERT_FILE, ENV_TLS_KEY_FILE)


def server_credentials(material: TlsMaterial) -> grpc.ServerCredentials:
    """Server credentials that present our certificate and require a client certificate
    signed by our CA (a client without one fails the handshake)."""
    return grpc.ssl_server_credentials(
        [(material.key_pem, material.cert_pem)],
        root_certificates=material.ca_pem,
        require_client_auth=True,
    )


def channel_credentials(material: TlsMaterial) -> grpc.ChannelCredentials:
    """Channel credentials that verify the server against our CA (and its address against
    the certificate's SANs) and present our certificate as the client's identity."""
    return grpc.ssl_channel_credentials(
        root_certificates=material.ca_pem,
        private_key=material.key_pem,
        certificate_chain=material.cert_pem,
    )


# ---------------------------------------------------------------- verified caller


def _name_from_spiffe(uri: str) -> str | None:
    if not uri.startswith(_SPIFFE_PREFIX):
        return None
    name = uri[len(_SPIFFE_PREFIX) :]
    try:
        _check_name(name)
    except ValueError:
        return None
    return name


def service_from_certificate(cert: x509.Certificate) -> str | None:
    """The name in the certificate's single ``spiffe://mppo/<name>`` URI SAN, else None."""
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return None
    uris = [u for u in san.get_values_for_type(x509.UniformResourceIdentifier) if "://" in u]
    spiffe = [u for u in uris if u.lower().startswith("spiffe://")]
    if len(spiffe) != 1:
        return None
    return _name_from_spiffe(spiffe[0])


def _first(values: Iterable[bytes] | None) -> bytes | None:
    for value in values or ():
        return value
    return None


def service_from_auth_context(auth: Mapping[str, Iterable[bytes]]) -> str | None:
    """The calling service named by a gRPC auth context (see the module docstring), or None
    when the connection is not TLS or the peer presented no certificate with our identity."""
    if _first(auth.get("transport_security_type")) != b"ssl":
        return None
    spiffe = _first(auth.get("peer_spiffe_id"))
    if spiffe is not None:
        return _name_from_spiffe(spiffe.decode("utf-8", "replace"))
    pem = _first(auth.get("x509_pem_cert"))
    if pem is None:
        return None
    try:
        cert = x509.load_pem_x509_certificate(pem)
    except ValueError:
        return None
    return service_from_certificate(cert)


def peer_service(context: grpc.aio.ServicerContext[Any, Any]) -> str | None:
    """The calling service's name from its verified client certificate, or None when the
    call did not come over mutual TLS. Never reads metadata."""
    return service_from_auth_context(context.auth_context())
