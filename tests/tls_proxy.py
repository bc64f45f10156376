"""A TLS terminator for tests: clients speak TLS to it, it speaks plain TCP to a server.

With `context=None` it relays plain TCP, for subclasses that only check who connects.

It stands where a TLS listener, a load balancer or stunnel stands in front of a broker
or Redis, so clients run real handshakes, verify the server's certificate against a CA
and, when the terminator asks for one, present their own.

>>> import ssl
>>> proxy = TlsProxy(ssl.create_default_context(ssl.Purpose.CLIENT_AUTH), 1, 2)
>>> proxy.handshakes
0
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
import threading


class TlsProxy:
    """Accept TLS on `listen_port` and relay each connection to `upstream_port` (127.0.0.1)."""

    def __init__(
        self, context: ssl.SSLContext | None, listen_port: int, upstream_port: int
    ) -> None:
        self.context = context
        self.listen_port = listen_port
        self.upstream_port = upstream_port
        self.handshakes = 0
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._server: asyncio.Server | None = None

    def __enter__(self) -> TlsProxy:
        self._thread.start()
        future = asyncio.run_coroutine_threadsafe(self._start(), self._loop)
        self._server = future.result(10)
        return self

    def __exit__(self, *exc: object) -> None:
        asyncio.run_coroutine_threadsafe(self._stop(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop.close()

    async def _stop(self) -> None:
        if self._server is not None:
            self._server.close()
        running = [task for task in asyncio.all_tasks() if task is not asyncio.current_task()]
        for task in running:
            task.cancel()
        await asyncio.gather(*running, return_exceptions=True)

    async def _start(self) -> asyncio.Server:
        timeout = None if self.context is None else 5
        return await asyncio.start_server(
            self._relay,
            "127.0.0.1",
            self.listen_port,
            ssl=self.context,
            ssl_handshake_timeout=timeout,
        )

    async def _relay(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.handshakes += 1
        try:
            upstream_reader, upstream_writer = await asyncio.open_connection(
                "127.0.0.1", self.upstream_port
            )
        except OSError:
            writer.close()
            return
        if not await self.admit(reader, writer, upstream_reader, upstream_writer):
            writer.close()
            upstream_writer.close()
            return
        await asyncio.gather(
            _pipe(reader, upstream_writer), _pipe(upstream_reader, writer), return_exceptions=True
        )

    async def admit(
        self,
        client_reader: asyncio.StreamReader,
        client_writer: asyncio.StreamWriter,
        upstream_reader: asyncio.StreamReader,
        upstream_writer: asyncio.StreamWriter,
    ) -> bool:
        """Whether to relay this connection; a subclass may talk to the client first."""
        return True


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while chunk := await reader.read(65536):
            writer.write(chunk)
            await writer.drain()
    finally:
        with contextlib.suppress(OSError, ssl.SSLError):
            writer.close()
