"""A throw-away certificate authority for the private brokers of the demo, the tests and the
benchmarks: TLS is then exercised the way a deployment uses it (a CA file, a server
certificate naming the host, client certificates whose common name is the login), with keys
that never leave a temporary folder.

Made with the ``cryptography`` package (already installed with paramiko), so no ``openssl``
command line is needed.
"""

from __future__ import annotations

import datetime
import ipaddress
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

LOOPBACK_NAMES = ("localhost", "127.0.0.1", "::1")


@dataclass(frozen=True)
class Issued:
    """A certificate and its private key, each in a PEM file."""

    cert_file: Path
    key_file: Path


def _name(common_name: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "edgecelery throw-away CA"),
            x509.NameAttribute(NameOID.COMMON_NAME, common_name),
        ]
    )


def _write_key(key: ec.EllipticCurvePrivateKey, path: Path) -> None:
    path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    path.chmod(0o600)


@dataclass
class ThrowawayCA:
    """A CA in ``directory`` (``ca.pem``) that issues server and client certificates there."""

    directory: Path
    common_name: str = "edgecelery test CA"

    def __post_init__(self) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        self._key = ec.generate_private_key(ec.SECP256R1())
        now = datetime.datetime.now(datetime.UTC)
        self._name = _name(self.common_name)
        self._cert = (
            x509.CertificateBuilder()
            .subject_name(self._name)
            .issuer_name(self._name)
            .public_key(self._key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=2))
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
            .sign(self._key, hashes.SHA256())
        )
        self.ca_file.write_bytes(self._cert.public_bytes(serialization.Encoding.PEM))

    @property
    def ca_file(self) -> Path:
        return self.directory / "ca.pem"

    def issue(self, common_name: str, *, server: bool = False) -> Issued:
        """A certificate for ``common_name``: a server's names the loopback addresses (so that
        hostname checks pass for 127.0.0.1 and localhost), a client's is the login name."""
        key = ec.generate_private_key(ec.SECP256R1())
        now = datetime.datetime.now(datetime.UTC)
        builder = (
            x509.CertificateBuilder()
            .subject_name(_name(common_name))
            .issuer_name(self._name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(
                x509.ExtendedKeyUsage(
                    [ExtendedKeyUsageOID.SERVER_AUTH if server else ExtendedKeyUsageOID.CLIENT_AUTH]
                ),
                critical=False,
            )
        )
        if server:
            names: list[x509.GeneralName] = [x509.DNSName("localhost")]
            names += [x509.IPAddress(ipaddress.ip_address(a)) for a in ("127.0.0.1", "::1")]
            builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
        cert = builder.sign(self._key, hashes.SHA256())
        stem = self.directory / common_name.replace("/", "_")
        issued = Issued(stem.with_suffix(".pem"), stem.with_suffix(".key"))
        issued.cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        _write_key(key, issued.key_file)
        return issued


@dataclass
class BrokerTLS:
    """What a private TLS broker and its clients use: the CA, the broker's certificate and
    the clients' (common name ``client_name``); ``ca`` issues more, e.g. one per site."""

    ca: ThrowawayCA
    server: Issued
    client: Issued

    @classmethod
    def make(cls, directory: Path, client_name: str = "edgecelery") -> BrokerTLS:
        ca = ThrowawayCA(directory)
        return cls(ca, ca.issue("broker", server=True), ca.issue(client_name))

    def settings(self, client: Issued | None = None) -> dict[str, str]:
        """The ``[broker]`` table for a client holding ``client`` (default: ``self.client``)."""
        client = client or self.client
        return {
            "ca_file": str(self.ca.ca_file),
            "cert_file": str(client.cert_file),
            "key_file": str(client.key_file),
        }
