"""A stand-in for the MailU of a provisioned VPS, as its accounts submit to it: aiosmtpd on the
VPS's own loopback address, STARTTLS required (a certificate for that address, signed by a test
CA the platform is told to trust with `vps_tls_ca_file`), AUTH required and checked against the
users the MailU admin stand-in holds. Each message is recorded with how it came: the EHLO name,
the peer's address, the login, and whether TLS was on."""

from __future__ import annotations

import ssl
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from ipaddress import ip_address
from pathlib import Path

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID


@dataclass
class Submitted:
    mail_from: str
    rcpt_tos: list[str]
    data: bytes
    helo: str | None
    peer: str
    login: str | None
    tls: bool


@dataclass
class Submission:
    """The handler: refuses a login `can_log_in` does not accept; records what it is given."""

    can_log_in: Callable[[str, str], bool]
    messages: list[Submitted] = field(default_factory=list)

    def authenticate(self, server, session, envelope, mechanism, auth_data) -> AuthResult:
        if not isinstance(auth_data, LoginPassword):
            return AuthResult(success=False, handled=False)
        login, password = auth_data.login.decode(), auth_data.password.decode()
        return AuthResult(success=self.can_log_in(login, password), auth_data=login)

    async def handle_DATA(self, server, session, envelope) -> str:
        self.messages.append(
            Submitted(
                envelope.mail_from, list(envelope.rcpt_tos), envelope.content, session.host_name,
                session.peer[0], session.auth_data, session.ssl is not None,
            )
        )  # fmt: skip
        return "250 2.0.0 queued"


@contextmanager
def running_submission(
    address: str, port: int, directory: Path, can_log_in: Callable[[str, str], bool]
) -> Iterator[tuple[Submission, Path]]:
    """The submission service on address:port; (its handler, the CA file to trust)."""
    cert, key, ca = directory / "vps.pem", directory / "vps.key", directory / "ca.pem"
    _issue(address, cert, key, ca)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    handler = Submission(can_log_in)
    controller = Controller(
        handler, hostname=address, port=port, tls_context=context, require_starttls=True,
        authenticator=handler.authenticate, auth_required=True, auth_require_tls=True,
        server_hostname="mailu.test",
    )  # fmt: skip
    controller.start()
    try:
        yield handler, ca
    finally:
        controller.stop()


def _issue(address: str, cert: Path, key: Path, ca_file: Path) -> None:
    """A CA, and a certificate for `address` signed by it."""
    now = datetime.now(UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "PenguinMails test CA")])
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(now + timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), True)
        .sign(ca_key, hashes.SHA256())
    )
    leaf_key = ec.generate_private_key(ec.SECP256R1())
    leaf = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, address)]))
        .issuer_name(ca_name)
        .public_key(leaf_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(now + timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ip_address(address))]), False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), True)
        .sign(ca_key, hashes.SHA256())
    )
    ca_file.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    cert.write_bytes(leaf.public_bytes(serialization.Encoding.PEM))
    key.write_bytes(
        leaf_key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
