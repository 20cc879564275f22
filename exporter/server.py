"""HTTP endpoints: metrics, /healthz, /readyz and a landing page. Never calls AWS."""

from __future__ import annotations

import contextlib
import html
import logging
import socket
import ssl
import threading
from collections.abc import Callable, Iterable, Sequence
from socketserver import ThreadingMixIn
from typing import Any
from urllib.parse import parse_qs
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from prometheus_client import make_wsgi_app
from prometheus_client.registry import CollectorRegistry

from exporter import __version__
from exporter.exposition import CachedExposition
from exporter.logs import fields
from exporter.webconfig import WebConfigWatcher

log = logging.getLogger(__name__)

StartResponse = Callable[..., Any]
Environ = dict[str, Any]


WsgiApp = Callable[[Environ, StartResponse], Iterable[bytes]]


def make_app(registry: CollectorRegistry, telemetry_path: str,
             exposition: CachedExposition) -> WsgiApp:
    """The WSGI app. Metrics come from the per-snapshot cache; a `name[]` filter (rare) goes
    through prometheus-client's own app over the full registry. /readyz follows the snapshot
    that /metrics serves."""
    filtered = make_wsgi_app(registry)
    landing = (
        "<!doctype html><html><head><title>Macie exporter</title></head><body>"
        f"<h1>Macie exporter</h1><p>Version {html.escape(__version__)}</p><ul>"
        f'<li><a href="{html.escape(telemetry_path)}">Metrics</a></li>'
        '<li><a href="/healthz">Health</a></li><li><a href="/readyz">Readiness</a></li>'
        "</ul></body></html>"
    ).encode()

    def respond(start: StartResponse, status: str, body: bytes,
                content_type: str = "text/plain; charset=utf-8") -> list[bytes]:
        start(status, [("Content-Type", content_type), ("Content-Length", str(len(body)))])
        return [body]

    def app(environ: Environ, start: StartResponse) -> Iterable[bytes]:
        path = environ.get("PATH_INFO", "/")
        if environ.get("REQUEST_METHOD", "GET") not in ("GET", "HEAD"):
            return respond(start, "405 Method Not Allowed", b"method not allowed\n")
        if path == telemetry_path:
            if "name[]" in parse_qs(environ.get("QUERY_STRING", "")):
                # prometheus-client's app answers GET only; HEAD gets the GET headers.
                return filtered({**environ, "REQUEST_METHOD": "GET"},  # type: ignore[no-any-return]
                                start)
            headers, body = exposition.render(environ.get("HTTP_ACCEPT"),
                                              environ.get("HTTP_ACCEPT_ENCODING"))
            start("200 OK", [*headers, ("Content-Length", str(len(body)))])
            return [body]
        if path == "/healthz":
            return respond(start, "200 OK", b"ok\n")
        if path == "/readyz":
            current = exposition.served()
            done = sum(1 for t in current.targets if t.completed)
            if current.ready:
                return respond(start, "200 OK", b"ready\n")
            message = f"not ready: {done} of {len(current.targets)} targets refreshed\n"
            return respond(start, "503 Service Unavailable", message.encode())
        if path == "/":
            return respond(start, "200 OK", landing, "text/html; charset=utf-8")
        return respond(start, "404 Not Found", b"not found\n")

    def app_without_head_bodies(environ: Environ, start: StartResponse) -> Iterable[bytes]:
        body = app(environ, start)
        return [] if environ.get("REQUEST_METHOD") == "HEAD" else body

    return app_without_head_bodies


OPEN_PATHS = ("/healthz", "/readyz")  # answered without basic auth (probes)


def secure(app: WsgiApp, web: WebConfigWatcher) -> WsgiApp:
    """Basic auth (except on the probe paths) and the configured response headers."""

    def wrapped(environ: Environ, start: StartResponse) -> Iterable[bytes]:
        config = web.current()

        def start_with_headers(status: str, headers: list[tuple[str, str]],
                               *args: Any) -> Any:
            return start(status, [*headers, *config.headers], *args)

        if (environ.get("PATH_INFO") not in OPEN_PATHS
                and not web.authorized(config, environ.get("HTTP_AUTHORIZATION"))):
            body = b"unauthorized\n"
            start_with_headers("401 Unauthorized", [
                ("WWW-Authenticate", 'Basic realm="macie-exporter", charset="UTF-8"'),
                ("Content-Type", "text/plain; charset=utf-8"),
                ("Content-Length", str(len(body)))])
            return [] if environ.get("REQUEST_METHOD") == "HEAD" else [body]
        return app(environ, start_with_headers)

    return wrapped


class _Handler(WSGIRequestHandler):
    disable_nagle_algorithm = True  # headers and body are separate writes

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("http request", extra={"kv": {"client": self.address_string(),
                                                "request": format % args}})


class _ThreadingServer(ThreadingMixIn, WSGIServer):
    daemon_threads = True
    allow_reuse_address = True
    # socketserver's default listen backlog is 5: many scrapers at once overflowed it, and the
    # dropped connections came back after TCP's 1 s, 3 s, ... retransmissions.
    request_queue_size = 128
    web: WebConfigWatcher | None = None

    def finish_request(self, request: Any, client_address: Any) -> None:
        """In the connection's own thread: the TLS handshake (if configured), then HTTP."""
        config = self.web.current() if self.web else None
        if config is None or config.ssl_context is None:
            super().finish_request(request, client_address)
            return
        request.settimeout(10)
        try:
            connection = config.ssl_context.wrap_socket(request, server_side=True)
        except (ssl.SSLError, OSError) as err:
            log.debug("TLS handshake failed", extra=fields(client=client_address[0],
                                                           error=str(err)))
            return
        try:
            if config.allowed_sans and not _san_allowed(connection, config.allowed_sans):
                log.debug("client certificate SAN not allowed",
                          extra=fields(client=client_address[0]))
                return
            connection.settimeout(None)
            super().finish_request(connection, client_address)
        finally:
            with contextlib.suppress(OSError):
                connection.close()


def _san_allowed(connection: ssl.SSLSocket, allowed: Sequence[str]) -> bool:
    certificate: dict[str, Any] = dict(connection.getpeercert() or {})
    names = {str(entry[1]) for entry in certificate.get("subjectAltName", ())}
    return bool(names & set(allowed))


class _ThreadingServer6(_ThreadingServer):
    address_family = socket.AF_INET6


class HttpServer:
    """A threaded WSGI server in a background thread."""

    def __init__(self, host: str, port: int, app: WsgiApp,
                 web: WebConfigWatcher | None = None) -> None:
        server_class = _ThreadingServer6 if ":" in host else _ThreadingServer
        self._server = make_server(host, port, secure(app, web) if web else app,
                                   server_class=server_class, handler_class=_Handler)
        self._server.web = web
        self._thread = threading.Thread(target=self._server.serve_forever, name="http",
                                        kwargs={"poll_interval": 0.2}, daemon=True)

    @property
    def address(self) -> str:
        host, port = self._server.server_address[:2]
        text = host.decode() if isinstance(host, bytes) else host
        return f"[{text}]:{port}" if ":" in text else f"{text}:{port}"

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
