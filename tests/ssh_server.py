"""A real SSH server for the deployment tests (asyncssh on a free loopback port): a generated
host key, public-key login for one client key it generates too, SFTP into a temporary root,
and commands answered as a VPS with Docker would (`docker compose up -d` exits 0, or as the
test configures). Every file written and every command run is recorded.

    async with ssh_server(tmp_path) as server:
        fingerprint = await mailu.deploy(server.target(), files, ...)
        server.files["/opt/mailu/mailu.env"], server.writes, server.commands
"""

from __future__ import annotations

import asyncio
import os
import shlex
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path

import asyncssh

from services.mailu import SshTarget

USERNAME = "root"


@dataclass
class Failure:
    """How `docker compose up -d` fails when configured to."""

    exit_status: int = 1
    stderr: str = "Error response from daemon: pull access denied\n"


@dataclass
class SshServer:
    root: Path  # what the client sees as /
    host_key: asyncssh.SSHKey
    client_key_path: Path  # the authorized client key, as a file deploy can read
    port: int = 0
    commands: list[str] = field(default_factory=list)  # every exec request, in order
    writes: list[str] = field(default_factory=list)  # every path opened for writing, in order
    compose_seconds: float = 0.0  # how long the next `docker compose up -d` takes
    composing: asyncio.Event = field(default_factory=asyncio.Event)
    compose_failure: Failure | None = None  # set: `docker compose up -d` fails so

    @property
    def fingerprint(self) -> str:
        return self.host_key.get_fingerprint()

    @property
    def files(self) -> dict[str, str]:
        """Remote path -> content of every file under the root, as it is now."""
        return {
            "/" + str(path.relative_to(self.root)): path.read_text()
            for path in sorted(self.root.rglob("*"))
            if path.is_file()
        }

    def mode(self, remote: str) -> int:
        return (self.root / remote.lstrip("/")).stat().st_mode & 0o777

    def target(
        self, *, client_key: Path | None = None, known_hosts: Path | None = None
    ) -> SshTarget:
        """The SshTarget of this server: its authorized key, trusting the host key shown
        unless `known_hosts` is given."""
        return SshTarget(
            host="127.0.0.1",
            port=self.port,
            username=USERNAME,
            client_key=client_key or self.client_key_path,
            known_hosts=known_hosts,
        )

    def known_hosts_file(self, directory: Path, key: asyncssh.SSHKey | None = None) -> Path:
        """A known_hosts file naming this server with its host key (or another key)."""
        path = directory / "known_hosts"
        line = (key or self.host_key).export_public_key().decode().strip()
        path.write_text(f"[127.0.0.1]:{self.port} {line}\n")
        return path

    # --- the server's behaviour ---

    async def run(self, process: asyncssh.SSHServerProcess) -> None:
        command = process.command or ""
        self.commands.append(command)
        status, stderr = self._answer(command)
        if self.compose_seconds and "docker compose up -d" in command:
            seconds, self.compose_seconds = self.compose_seconds, 0.0  # the next one only
            self.composing.set()  # images being pulled: a client killed now never hears
            await asyncio.sleep(seconds)
        if stderr:
            process.stderr.write(stderr)
        process.exit(status)

    def _answer(self, command: str) -> tuple[int, str]:
        for step in command.split("&&"):
            words = shlex.split(step)
            if words[:1] == ["cd"] and len(words) == 2:
                if not (self.root / words[1].lstrip("/")).is_dir():
                    return 1, f"sh: cd: {words[1]}: No such file or directory\n"
            elif words[:2] == ["mkdir", "-p"]:
                for path in words[2:]:
                    (self.root / path.lstrip("/")).mkdir(parents=True, exist_ok=True)
            elif words == ["docker", "compose", "up", "-d"]:
                if self.compose_failure is not None:
                    return self.compose_failure.exit_status, self.compose_failure.stderr
            else:
                return 127, f"sh: {words[0] if words else ''}: command not found\n"
        return 0, ""


class _Sftp(asyncssh.SFTPServer):
    def __init__(self, chan: asyncssh.SSHServerChannel, server: SshServer) -> None:
        super().__init__(chan, chroot=os.fsencode(server.root))
        self._server = server

    def open(self, path: bytes, pflags: int, attrs: asyncssh.SFTPAttrs) -> object:
        if pflags & asyncssh.FXF_WRITE:
            self._server.writes.append(os.fsdecode(path))
        return super().open(path, pflags, attrs)


@asynccontextmanager
async def ssh_server(directory: Path, host: str = "127.0.0.1") -> AsyncIterator[SshServer]:
    """The server on a free port of a loopback address, its root and keys under `directory`."""
    root = directory / "root"
    root.mkdir(parents=True)
    client_key = asyncssh.generate_private_key("ssh-ed25519")
    client_key_path = directory / "id_ed25519"
    client_key.write_private_key(client_key_path)
    client_key_path.chmod(0o600)
    server = SshServer(
        root=root,
        host_key=asyncssh.generate_private_key("ssh-ed25519"),
        client_key_path=client_key_path,
    )
    authorized = asyncssh.import_authorized_keys(client_key.export_public_key().decode())
    acceptor = await asyncssh.listen(
        host,
        0,
        server_host_keys=[server.host_key],
        authorized_client_keys=authorized,
        process_factory=server.run,
        sftp_factory=lambda chan: _Sftp(chan, server),
        allow_scp=False,
    )
    server.port = acceptor.get_port()
    try:
        yield server
    finally:
        acceptor.close()
        await acceptor.wait_closed()


def other_key_file(directory: Path) -> Path:
    """A client key the server does not know."""
    path = directory / "id_other"
    asyncssh.generate_private_key("ssh-ed25519").write_private_key(path)
    path.chmod(0o600)
    return path
