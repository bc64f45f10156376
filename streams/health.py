"""`/metrics`, `/healthz` and `/readyz` for processes without a web framework (the worker).

Kubernetes probes and Prometheus read the same small server:

- `/healthz` answers 200 while the process's loop has beaten within `stale_after`
  seconds, 503 otherwise (liveness: restart a stuck worker);
- `/readyz` answers 200 once the process has caught up with rules and models and
  joined its group (readiness);
- `/metrics` is prometheus-client's exposition of the default registry.

>>> probe = Probe(stale_after=30)
>>> probe.live(), probe.ready
(True, False)
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from prometheus_client import make_wsgi_app

StartResponse = Callable[..., Any]


class Probe:
    """Liveness from a heartbeat, readiness from a flag the process sets."""

    def __init__(self, stale_after: float) -> None:
        self.stale_after = stale_after
        self.ready = False
        self._beat = time.monotonic()

    def beat(self) -> None:
        """The process's loop came round once more."""
        self._beat = time.monotonic()

    def live(self) -> bool:
        """Whether the loop beat recently enough."""
        return time.monotonic() - self._beat <= self.stale_after


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        """Scrapes and probes every few seconds are not worth a log line."""


class _ThreadingServer(WSGIServer):
    daemon_threads = True

    def process_request(self, request: Any, client_address: Any) -> None:
        threading.Thread(target=self._handle, args=(request, client_address), daemon=True).start()

    def _handle(self, request: Any, client_address: Any) -> None:
        try:
            self.finish_request(request, client_address)
        finally:
            self.shutdown_request(request)


def _app(probe: Probe) -> Callable[[dict[str, Any], StartResponse], Iterable[bytes]]:
    metrics = make_wsgi_app()

    def app(environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        path = environ.get("PATH_INFO", "")
        if path in ("/healthz", "/readyz"):
            ok = probe.live() if path == "/healthz" else probe.ready and probe.live()
            status = "200 OK" if ok else "503 Service Unavailable"
            start_response(status, [("Content-Type", "text/plain")])
            return [b"ok\n" if ok else b"not ok\n"]
        return metrics(environ, start_response)  # type: ignore[no-any-return]

    return app


def serve(host: str, port: int, probe: Probe) -> WSGIServer:
    """Serve the probes and metrics on `host:port` from a daemon thread."""
    server = make_server(
        host, port, _app(probe), server_class=_ThreadingServer, handler_class=_QuietHandler
    )
    threading.Thread(target=server.serve_forever, name="metrics", daemon=True).start()
    return server
