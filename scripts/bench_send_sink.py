"""A minimal SMTP sink for scripts/bench_send.py: accepts every message, keeps only a count.

A hand-written asyncio.Protocol (on uvloop when importable) rather than aiosmtpd, so the sink is
not the bottleneck of the benchmark: it parses just EHLO/HELO, MAIL, RCPT, DATA, RSET, NOOP, QUIT
and looks for the end-of-data marker without unstuffing or storing the message. The extra verb
`XCOUNT` answers `250 <accepted messages>`; `XRESET` sets the count to zero.

`--delay-ms D` makes it a slow server: each end of DATA is answered (and counted) D ms later, a
timer per message, so a connection waits for its own reply while the others go on. With C
connections each sending one message at a time, C / D is then the most any client can reach.

    python scripts/bench_send_sink.py --port 2525 [--host 127.0.0.1] [--delay-ms 0]
"""

from __future__ import annotations

import argparse
import asyncio
import sys

COUNT = 0
DELAY = 0.0  # seconds before the reply to the end of DATA (--delay-ms)
EHLO = b"250-sink\r\n250-PIPELINING\r\n250-8BITMIME\r\n250-SIZE 104857600\r\n250 SMTPUTF8\r\n"
END = b"\r\n.\r\n"


class Smtp(asyncio.Protocol):
    def connection_made(self, transport) -> None:
        self.t = transport
        self.buf = b""
        self.data = False
        self.waiting = False  # the reply to a DATA is delayed: nothing after it is answered yet
        transport.write(b"220 sink ESMTP\r\n")

    def data_received(self, chunk: bytes) -> None:
        if self.waiting:  # the replies go out in order: what came after that DATA waits too
            self.buf += chunk
            return
        self._answer(self.buf + chunk)

    def _answer(self, buf: bytes) -> None:
        global COUNT
        out = []
        while True:
            if self.data:
                # "\r\n.\r\n" ends the data; at the very start the first "\r\n" is DATA's own.
                i = buf.find(END)
                if i < 0:
                    self.buf = buf[-4:] if len(buf) > 4 else buf
                    # keep the tail only: the message body itself is not needed
                    break
                buf = buf[i + 5 :]
                self.data = False
                if DELAY:
                    if out:
                        self.t.write(b"".join(out))
                    self.buf, self.waiting = buf, True
                    asyncio.get_running_loop().call_later(DELAY, self._accept_late)
                    return
                COUNT += 1
                out.append(b"250 2.0.0 OK queued\r\n")
                continue
            i = buf.find(b"\r\n")
            if i < 0:
                self.buf = buf
                break
            line, buf = buf[:i], buf[i + 2 :]
            verb = line[:4].upper()
            if verb == b"EHLO":
                out.append(EHLO)
            elif verb in (b"MAIL", b"RCPT", b"RSET", b"NOOP", b"HELO"):
                out.append(b"250 OK\r\n")
            elif verb == b"DATA":
                out.append(b"354 End data with <CR><LF>.<CR><LF>\r\n")
                self.data = True
                buf = b"\r\n" + buf  # so a message beginning with "." + CRLF still ends right
            elif verb == b"QUIT":
                out.append(b"221 Bye\r\n")
                self.t.write(b"".join(out))
                self.t.close()
                return
            elif line.upper() == b"XCOUNT":
                out.append(b"250 %d\r\n" % COUNT)
            elif line.upper() == b"XRESET":
                COUNT = 0
                out.append(b"250 0\r\n")
            else:
                out.append(b"502 5.5.2 command not recognized\r\n")
        if out:
            self.t.write(b"".join(out))

    def _accept_late(self) -> None:
        """The delayed reply to a DATA (--delay-ms), then whatever the client sent meanwhile."""
        global COUNT
        if self.t.is_closing():  # the client gave up waiting: the message was not accepted
            return
        COUNT += 1
        self.t.write(b"250 2.0.0 OK queued\r\n")
        self.waiting = False
        buf, self.buf = self.buf, b""
        self._answer(buf)


async def serve(host: str, port: int) -> None:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(Smtp, host, port, backlog=1024, reuse_address=True)
    print(f"sink listening on {host}:{port}", flush=True)
    async with server:
        await server.serve_forever()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument(
        "--delay-ms", type=float, default=0.0, help="wait this long before answering each DATA"
    )
    args = parser.parse_args()
    global DELAY
    DELAY = args.delay_ms / 1000
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    asyncio.run(serve(args.host, args.port))


if __name__ == "__main__":
    sys.exit(main())
