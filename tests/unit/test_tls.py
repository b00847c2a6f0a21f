"""The development PKI, TLS settings and reading the caller from a gRPC auth context."""

from __future__ import annotations

import datetime
import ipaddress
import stat
from collections.abc import Sequence
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from mppo.platform.tls import (
    TlsConfigError,
    TlsMaterial,
    mint_dev_pki,
    service_from_auth_context,
    service_from_certificate,
    spiffe_id,
)


def _cert(path: Path) -> x509.Certificate:
    return x509.load_pem_x509_certificate(path.read_bytes())


def _files(directory: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(directory.iterdir()) if p.name != ".lock"}


def test_mint_writes_ca_certificates_and_user_token_keys(tmp_path: Path) -> None:
    mint_dev_pki(tmp_path, ["group", "operator"])

    assert set(_files(tmp_path)) == {
        "ca.pem",
        "ca.key",
        "group.pem",
        "group.key",
        "operator.pem",
        "operator.key",
        "user-token.key",
        "user-token.pub",
    }
    for key in ("ca.key", "group.key", "operator.key", "user-token.key"):
        assert stat.S_IMODE((tmp_path / key).stat().st_mode) == 0o600, key

    ca = _cert(tmp_path / "ca.pem")
    assert ca.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    cert = _cert(tmp_path / "group.pem")
    cert.verify_directly_issued_by(ca)
    assert cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "group"
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.UniformResourceIdentifier) == ["spiffe://mppo/group"]
    assert set(san.get_values_for_type(x509.DNSName)) == {"localhost", "group"}
    assert set(san.get_values_for_type(x509.IPAddress)) == {
        ipaddress.ip_address("127.0.0.1"),
        ipaddress.ip_address("::1"),
    }
    eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert set(eku) == {ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH}
    assert not cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca

    group_key = serialization.load_pem_private_key((tmp_path / "group.key").read_bytes(), None)
    assert isinstance(group_key, ec.EllipticCurvePrivateKey)
    assert group_key.public_key() == cert.public_key()
    token_key = serialization.load_pem_private_key((tmp_path / "user-token.key").read_bytes(), None)
    assert isinstance(token_key, ed25519.Ed25519PrivateKey)
    public = serialization.load_pem_public_key((tmp_path / "user-token.pub").read_bytes())
    assert token_key.public_key() == public


def test_mint_is_idempotent_and_adds_missing_names(tmp_path: Path) -> None:
    mint_dev_pki(tmp_path, ["group"])
    first = _files(tmp_path)

    mint_dev_pki(tmp_path, ["group"])
    assert _files(tmp_path) == first

    mint_dev_pki(tmp_path, ["group", "payment"])
    second = _files(tmp_path)
    assert {k: second[k] for k in first} == first  # kept, CA included
    _cert(tmp_path / "payment.pem").verify_directly_issued_by(_cert(tmp_path / "ca.pem"))


def test_mint_replaces_broken_or_foreign_material(tmp_path: Path) -> None:
    pki, other = tmp_path / "pki", tmp_path / "other"
    mint_dev_pki(pki, ["group", "payment"])
    before = _files(pki)
    (pki / "group.key").unlink()
    mint_dev_pki(other, ["payment"])  # another CA
    (pki / "payment.pem").write_bytes((other / "payment.pem").read_bytes())
    (pki / "payment.key").write_bytes((other / "payment.key").read_bytes())

    mint_dev_pki(pki, ["group", "payment"])

    after = _files(pki)
    assert after["ca.pem"] == before["ca.pem"]
    ca = _cert(pki / "ca.pem")
    for name in ("group", "payment"):
        _cert(pki / f"{name}.pem").verify_directly_issued_by(ca)
        assert after[f"{name}.pem"] != before[f"{name}.pem"]
    assert after["payment.key"] != (other / "payment.key").read_bytes()


def test_a_new_ca_reissues_every_certificate(tmp_path: Path) -> None:
    mint_dev_pki(tmp_path, ["group"])
    old_cert = (tmp_path / "group.pem").read_bytes()
    (tmp_path / "ca.key").unlink()

    mint_dev_pki(tmp_path, ["group"])

    assert (tmp_path / "group.pem").read_bytes() != old_cert
    _cert(tmp_path / "group.pem").verify_directly_issued_by(_cert(tmp_path / "ca.pem"))


def test_mint_refuses_names_that_cannot_be_identities(tmp_path: Path) -> None:
    for bad in ("", "a/b", "spiffe://x", "-x", "é"):
        with pytest.raises(ValueError, match="invalid identity name"):
            mint_dev_pki(tmp_path, [bad])


def test_material_from_env(tmp_path: Path) -> None:
    mint_dev_pki(tmp_path, ["order"])
    assert TlsMaterial.from_env({}, "order") is None

    from_dir = TlsMaterial.from_env({"MPPO_TLS_DIR": str(tmp_path)}, "order")
    assert from_dir == TlsMaterial(
        ca_pem=(tmp_path / "ca.pem").read_bytes(),
        cert_pem=(tmp_path / "order.pem").read_bytes(),
        key_pem=(tmp_path / "order.key").read_bytes(),
    )

    files = {
        "MPPO_TLS_CA_FILE": str(tmp_path / "ca.pem"),
        "MPPO_TLS_CERT_FILE": str(tmp_path / "order.pem"),
        "MPPO_TLS_KEY_FILE": str(tmp_path / "order.key"),
    }
    # explicit files win over the directory, whatever name is asked for
    assert TlsMaterial.from_env({**files, "MPPO_TLS_DIR": "/nowhere"}, "group") == from_dir

    with pytest.raises(TlsConfigError, match="MPPO_TLS_KEY_FILE not set"):
        TlsMaterial.from_env({k: v for k, v in files.items() if "KEY" not in k}, "order")
    with pytest.raises(TlsConfigError, match=r"cannot read TLS file .*/group\.pem"):
        TlsMaterial.from_env({"MPPO_TLS_DIR": str(tmp_path)}, "group")
    (tmp_path / "junk.pem").write_text("not pem")
    with pytest.raises(TlsConfigError, match="not a PEM file"):
        TlsMaterial.from_env({**files, "MPPO_TLS_CERT_FILE": str(tmp_path / "junk.pem")}, "x")


def _self_signed(sans: Sequence[x509.GeneralName]) -> x509.Certificate:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "payment")])
    now = datetime.datetime.now(datetime.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(1)
        .not_valid_before(now)
        .not_valid_after(now + datetime.timedelta(days=1))
    )
    if sans:
        builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
    return builder.sign(key, hashes.SHA256())


def test_service_from_certificate_needs_exactly_one_mppo_spiffe_uri() -> None:
    uri = x509.UniformResourceIdentifier
    assert service_from_certificate(_self_signed([uri(spiffe_id("payment"))])) == "payment"
    assert service_from_certificate(_self_signed([])) is None  # a CN alone is no identity
    assert service_from_certificate(_self_signed([x509.DNSName("payment")])) is None
    assert service_from_certificate(_self_signed([uri("spiffe://other/payment")])) is None
    assert service_from_certificate(_self_signed([uri("spiffe://mppo/a/b")])) is None
    two = [uri(spiffe_id("payment")), uri(spiffe_id("group"))]
    assert service_from_certificate(_self_signed(two)) is None


def test_service_from_auth_context(tmp_path: Path) -> None:
    mint_dev_pki(tmp_path, ["payment"])
    pem = (tmp_path / "payment.pem").read_bytes()
    ssl = [b"ssl"]
    # what grpcio 1.85 reports for a verified client certificate (see mppo/platform/tls.py)
    assert (
        service_from_auth_context(
            {
                "transport_security_type": ssl,
                "x509_common_name": [b"payment"],
                "x509_subject_alternative_name": [b"spiffe://mppo/payment", b"localhost"],
                "x509_pem_cert": [pem],
                "peer_spiffe_id": [b"spiffe://mppo/payment"],
            }
        )
        == "payment"
    )
    # without peer_spiffe_id the certificate itself is read
    assert service_from_auth_context({"transport_security_type": ssl, "x509_pem_cert": [pem]}) == (
        "payment"
    )
    # a common name alone, another trust domain, or no TLS: nobody
    assert (
        service_from_auth_context({"transport_security_type": ssl, "x509_common_name": [b"group"]})
        is None
    )
    assert (
        service_from_auth_context(
            {"transport_security_type": ssl, "peer_spiffe_id": [b"spiffe://evil/payment"]}
        )
        is None
    )
    assert (
        service_from_auth_context(
            {"transport_security_type": [b"insecure"], "peer_spiffe_id": [b"spiffe://mppo/x"]}
        )
        is None
    )
    assert service_from_auth_context({}) is None
