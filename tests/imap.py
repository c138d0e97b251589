"""A real IMAP server for the reply tests: Debian's dovecot (penguinmails.embedded finds or
installs it), on a free loopback port, with a configuration of its own in a temporary directory
(no system config is read). Each user has a passwd-file of its own, mail is in Maildirs; `stop`
ends the server and removes the directory."""

from __future__ import annotations

import grp
import imaplib
import os
import pwd
import re
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from ipaddress import ip_address
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from penguinmails.embedded import dovecot_binary

HOST = "127.0.0.1"
JUNK = "Bulk Mail"
_APPENDUID = re.compile(rb"APPENDUID \d+ (\d+)")

# Dovecot 2.3. Processes run as dovecot's own users when started as root (mail as `nobody`:
# dovecot refuses mail access as root), else all as the current user.
CONFIG = """\
base_dir = {root}/run
state_dir = {root}/state
instance_name = penguinmails-test-{port}
protocols = imap
listen = {host}
{ssl}
disable_plaintext_auth = no
auth_mechanisms = plain login
log_path = {root}/dovecot.log
default_internal_user = {internal_user}
default_internal_group = {internal_group}
default_login_user = {login_user}
first_valid_uid = {mail_uid}
first_valid_gid = {mail_gid}
mail_location = maildir:~/Maildir
# A Junk folder whose name is none of the usual ones: found only by its SPECIAL-USE.
namespace inbox {{
  inbox = yes
  mailbox "{junk}" {{
    special_use = \\Junk
    auto = create
  }}
}}
{capability}
passdb {{
  driver = passwd-file
  args = scheme=PLAIN {root}/users/%u
}}
userdb {{
  driver = static
  args = uid={mail_uid} gid={mail_gid} home={root}/mail/%u
}}
service imap-login {{
  {chroot}
  inet_listener imap {{
    address = {host}
    port = {port}
  }}
  inet_listener imaps {{
    port = 0
  }}
}}
service anvil {{
  {chroot}
}}
"""


class Dovecot:
    def __init__(self, root: Path, port: int, process: subprocess.Popen) -> None:
        self.root, self.port, self.process = root, port, process
        self.host = HOST
        self.certificate = root / "cert.pem"  # with tls: the server's self-signed certificate

    def add_user(self, username: str, password: str) -> None:
        """A mailbox user (dovecot sees the passwd-file change at the next log-in)."""
        # A file per user: dovecot re-reads a changed passwd-file at most once a second.
        users = self.root / "users" / username
        users.write_text(f"{username}:{{PLAIN}}{password}::::::\n")
        users.chmod(0o644)

    def append(self, username: str, password: str, raw: bytes, folder: str = "INBOX") -> int:
        """Puts a message into one of the user's folders with IMAP APPEND, as delivery would;
        its UID."""
        imap = imaplib.IMAP4(self.host, self.port, timeout=10)
        try:
            imap.login(username, password)
            status, data = imap.append(f'"{folder}"', None, None, raw)
            assert status == "OK", data
        finally:
            imap.logout()
        found = _APPENDUID.search(data[0])
        assert found, data
        return int(found.group(1))

    def folder(self, username: str, password: str, folder: str) -> list[tuple[set[str], bytes]]:
        """Each message in the folder: its flags and its bytes (read without changing them)."""
        imap = imaplib.IMAP4(self.host, self.port, timeout=10)
        try:
            imap.login(username, password)
            status, data = imap.select(f'"{folder}"', readonly=True)
            assert status == "OK", data
            status, data = imap.fetch("1:*", "(FLAGS BODY.PEEK[])") if int(data[0]) else ("OK", [])
            assert status == "OK", data
        finally:
            imap.logout()
        return [
            ({flag.decode() for flag in imaplib.ParseFlags(prefix)}, raw)
            for prefix, raw in (item for item in data if isinstance(item, tuple))
        ]

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()  # the master stops its own processes
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)
        shutil.rmtree(self.root, ignore_errors=True)

    def log(self) -> str:
        logs = [self.root / "dovecot.log", self.root / "master.log"]
        return "\n".join(p.read_text(errors="replace") for p in logs if p.exists())


def start_dovecot(
    *, tls: bool = False, capabilities: str | None = None, host: str = HOST
) -> Dovecot:
    """A server on a free port of `host` (a loopback address); with `tls`, it offers STARTTLS
    with a certificate for 127.0.0.1 that no one trusts unless told to (`Dovecot.certificate`);
    with `capabilities`, it announces only those once logged in (a server without MOVE, say)."""
    binary = dovecot_binary()
    root = Path(tempfile.mkdtemp(prefix="pm-dovecot-"))
    root.chmod(0o755)  # dovecot's unprivileged processes read the users file and the mail
    port = free_port()
    ssl = "ssl = no"
    if tls:
        _self_signed(root / "cert.pem", root / "key.pem")
        ssl = f"ssl = yes\nssl_cert = <{root}/cert.pem\nssl_key = <{root}/key.pem"
    (root / "users").mkdir(mode=0o755)
    mail = root / "mail"
    mail.mkdir()
    if os.geteuid() == 0:
        nobody = pwd.getpwnam("nobody")
        mail_uid, mail_gid = nobody.pw_uid, nobody.pw_gid
        os.chown(mail, mail_uid, mail_gid)
        users = {"internal_user": "dovecot", "internal_group": "dovecot", "login_user": "dovenull"}
        chroot = ""
    else:
        me = pwd.getpwuid(os.getuid())
        mail_uid, mail_gid = me.pw_uid, me.pw_gid
        users = {"internal_user": me.pw_name, "login_user": me.pw_name}
        users["internal_group"] = _group_name(me.pw_gid)
        chroot = "chroot ="  # chroot needs root
    config = root / "dovecot.conf"
    config.write_text(
        CONFIG.format(
            root=root,
            host=host,
            port=port,
            mail_uid=mail_uid,
            mail_gid=mail_gid,
            chroot=chroot,
            ssl=ssl,
            junk=JUNK,
            capability=f"imap_capability = {capabilities}" if capabilities else "",
            **users,
        )
    )
    with (root / "master.log").open("w") as out:
        process = subprocess.Popen(
            [str(binary), "-F", "-c", str(config)], stdout=out, stderr=subprocess.STDOUT
        )
    server = Dovecot(root, port, process)
    server.host = host
    deadline = time.monotonic() + 30
    while not _greets(host, port):
        if process.poll() is not None or time.monotonic() > deadline:
            log = server.log()
            server.stop()
            raise RuntimeError(f"dovecot did not start on {host}:{port}:\n{log}")
        time.sleep(0.05)
    return server


@contextmanager
def running_dovecot(**options) -> Iterator[Dovecot]:
    """start_dovecot(**options), stopped at the end of the block."""
    server = start_dovecot(**options)
    try:
        yield server
    finally:
        server.stop()


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def _greets(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=1) as conn:
            return conn.recv(100).startswith(b"* OK")
    except OSError:
        return False


def _group_name(gid: int) -> str:
    return grp.getgrgid(gid).gr_name


def _self_signed(cert: Path, key: Path) -> None:
    private = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, HOST)])
    now = datetime.now(UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(private.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(now + timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ip_address(HOST))]), False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), True)
        .sign(private, hashes.SHA256())
    )
    cert.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    key.write_bytes(
        private.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
