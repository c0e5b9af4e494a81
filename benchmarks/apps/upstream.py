"""The local upstream the fan-out views call: answers every GET after 50 ms.

``python -m benchmarks.apps.upstream PORT``

A bare asyncio protocol rather than a web framework, so that on its shared
CPU it stays far from being the bottleneck of the fan-out scenarios: it
reads request heads (GETs, no bodies), and answers each, in order, 50 ms
after it arrived, on a keep-alive connection.
"""

from __future__ import annotations

import asyncio
import sys
import typing as t

DELAY = 0.05
BODY = b"upstream"
RESPONSE = (
    b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: "
    + str(len(BODY)).encode()
    + b"\r\n\r\n"
    + BODY
)


class SlowAnswers(asyncio.Protocol):
    def connection_made(self, transport: t.Any) -> None:
        self.transport = transport
        self.pending = b""
        self.loop = asyncio.get_running_loop()

    def data_received(self, data: bytes) -> None:
        self.pending += data
        heads = self.pending.count(b"\r\n\r\n")
        if heads:
            self.pending = self.pending.rpartition(b"\r\n\r\n")[2]
            self.loop.call_later(DELAY, self.answer, heads)

    def answer(self, count: int) -> None:
        if not self.transport.is_closing():
            self.transport.write(RESPONSE * count)


async def serve(port: int) -> None:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(SlowAnswers, "127.0.0.1", port, backlog=4096)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    try:
        asyncio.run(serve(int(sys.argv[1])))
    except KeyboardInterrupt:
        pass
