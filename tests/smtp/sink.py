#!/usr/bin/env python3
"""A real SMTP server for Confidant's tests and benchmarks (aiosmtpd on loopback).

Prints the port it listens on, then stores every message it accepts as
<dir>/<n>.eml with the envelope recipients in an `X-Envelope-To` first line.

  --port P          listen on P (default 0: any free port)
  --fail-after N    accept N messages, then vanish mid-conversation (the process exits)
  --refuse ADDR     answer 550 to RCPT TO:<ADDR> (repeatable)
  --count-only      count messages instead of storing them (benchmarks); prints the count on exit
"""
import argparse
import asyncio
import os
import signal
import sys

from aiosmtpd.smtp import SMTP


class Sink:
    def __init__(self, out, fail_after, refuse, count_only):
        self.out, self.fail_after, self.refuse, self.count_only = out, fail_after, set(a.lower() for a in refuse), count_only
        self.n = 0

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        if address.lower() in self.refuse:
            return "550 5.1.1 mailbox unavailable"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):
        if self.fail_after is not None and self.n >= self.fail_after:
            sys.stdout.flush()
            os._exit(0)
        self.n += 1
        if not self.count_only:
            path = os.path.join(self.out, f"{self.n:07d}.eml")
            tmp = path + ".tmp"
            with open(tmp, "wb") as f:
                f.write(b"X-Envelope-To: " + ",".join(envelope.rcpt_tos).encode() + b"\r\n")
                f.write(envelope.original_content or envelope.content)
            os.replace(tmp, path)
        return "250 2.0.0 queued"


async def main():
    p = argparse.ArgumentParser()
    p.add_argument("dir")
    p.add_argument("--port", type=int, default=0)
    p.add_argument("--fail-after", type=int)
    p.add_argument("--refuse", action="append", default=[])
    p.add_argument("--count-only", action="store_true")
    a = p.parse_args()
    os.makedirs(a.dir, exist_ok=True)
    sink = Sink(a.dir, a.fail_after, a.refuse, a.count_only)
    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: SMTP(sink, hostname="sink.test", data_size_limit=10 * 1024 * 1024), "127.0.0.1", a.port, reuse_address=True)
    print(server.sockets[0].getsockname()[1], flush=True)
    stop = asyncio.Event()
    for s in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(s, stop.set)
    await stop.wait()
    server.close()
    print(sink.n, flush=True)


if __name__ == "__main__":
    asyncio.run(main())
