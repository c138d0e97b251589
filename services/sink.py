"""A local SMTP sink for development and demos: accepts every message and stores it as an
.eml file, so `penguinmails up` can really send without reaching the Internet."""

from __future__ import annotations

import uuid
from pathlib import Path

from aiosmtpd.controller import Controller


class StoringHandler:
    def __init__(self, directory: Path) -> None:
        self.directory = directory
        directory.mkdir(parents=True, exist_ok=True)
        self.received = 0

    async def handle_DATA(self, server, session, envelope) -> str:
        name = f"{uuid.uuid4().hex}.eml"
        header = f"X-Sink-Mail-From: {envelope.mail_from}\r\nX-Sink-Rcpt-To: {', '.join(envelope.rcpt_tos)}\r\n"
        (self.directory / name).write_bytes(header.encode() + envelope.content)
        self.received += 1
        return "250 OK stored"


def start_sink(directory: Path, host: str, port: int) -> Controller:
    controller = Controller(StoringHandler(directory), hostname=host, port=port)
    controller.start()
    return controller
