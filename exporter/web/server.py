"""HTTP endpoints: metrics, /healthz, /readyz, /-/reload and a landing page. Never calls AWS.

The server is bounded: one selector thread, a fixed pool of workers (see the note above
REQUEST_TIMEOUT). HTTP/1.1 is parsed and framed by h11; this module adds what h11 leaves to
its user: limits, deadlines, the checks RFC 9110 asks of an origin server, TLS.
"""

from __future__ import annotations

import contextlib
import errno
import heapq
import html
import io
import logging
import re
import selectors
import socket
import ssl
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from email.utils import formatdate
from http import HTTPStatus
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

import h11

from exporter import __version__
from exporter.logs import fields
from exporter.render.exposition import CachedExposition
from exporter.web import stats as reasons
from exporter.web.stats import HttpStats
from exporter.web.webconfig import WebConfigWatcher

log = logging.getLogger(__name__)

StartResponse = Callable[..., Any]
Environ = dict[str, Any]


WsgiApp = Callable[[Environ, StartResponse], Iterable[bytes]]
# The probes, answered without basic auth or rate limit; /-/healthy and /-/ready are
# Prometheus' own names for /healthz and /readyz, answered the same.
HEALTHY_PATHS = ("/healthz", "/-/healthy")
READY_PATHS = ("/readyz", "/-/ready")
OPEN_PATHS = (*HEALTHY_PATHS, *READY_PATHS)
RELOAD_PATH = "/-/reload"
# What /-/reload answers without --web.enable-lifecycle (Prometheus' words).
LIFECYCLE_DISABLED = "Lifecycle API is not enabled."
# A reload: (status code, one line saying how it went).
Reload = Callable[[], tuple[int, str]]


def endpoints(telemetry_path: str) -> tuple[str, ...]:
    """The paths the exporter serves (the `handler` label values of its HTTP counters)."""
    return (telemetry_path, *OPEN_PATHS, RELOAD_PATH, "/")


def make_app(telemetry_path: str, exposition: CachedExposition,
             reload: Reload | None = None) -> WsgiApp:
    """The WSGI app. Metrics, `name[]` filters included, come from the per-snapshot cache.
    /readyz follows the snapshot that /metrics serves. POST or PUT /-/reload runs `reload`
    (None: 403, the lifecycle API is off)."""
    landing = (
        "<!doctype html><html><head><title>Macie exporter</title></head><body>"
        f"<h1>Macie exporter</h1><p>Version {html.escape(__version__)}</p><ul>"
        f'<li><a href="{html.escape(telemetry_path)}">Metrics</a></li>'
        '<li><a href="/healthz">Health</a></li><li><a href="/readyz">Readiness</a></li>'
        "</ul></body></html>"
    ).encode()

    def respond(start: StartResponse, status: str, body: bytes,
                content_type: str = "text/plain; charset=utf-8",
                extra: Sequence[tuple[str, str]] = ()) -> list[bytes]:
        start(status, [("Content-Type", content_type), ("Content-Length", str(len(body))),
                       *extra])
        return [body]

    def app(environ: Environ, start: StartResponse) -> Iterable[bytes]:
        path = environ.get("PATH_INFO", "/")
        if path == RELOAD_PATH:
            if environ.get("REQUEST_METHOD") not in ("POST", "PUT"):
                return respond(start, "405 Method Not Allowed",
                               b"This endpoint requires a POST or PUT request.\n",
                               extra=[("Allow", "POST, PUT")])
            code, message = (HTTPStatus.FORBIDDEN, LIFECYCLE_DISABLED) if reload is None \
                else reload()
            return respond(start, f"{code} {HTTPStatus(code).phrase}",
                           f"{message}\n".encode())
        if environ.get("REQUEST_METHOD", "GET") not in ("GET", "HEAD"):
            return respond(start, "405 Method Not Allowed", b"method not allowed\n",
                           extra=[("Allow", "GET, HEAD")])
        if path == telemetry_path:
            names = parse_qs(environ.get("QUERY_STRING", "")).get("name[]")
            headers, length, pieces = exposition.stream(environ.get("HTTP_ACCEPT"),
                                                        environ.get("HTTP_ACCEPT_ENCODING"),
                                                        names)
            start("200 OK", [*headers, ("Content-Length", str(length))])
            return pieces
        if path in HEALTHY_PATHS:
            return respond(start, "200 OK", b"ok\n")
        if path in READY_PATHS:
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


def secure(app: WsgiApp, web: WebConfigWatcher) -> WsgiApp:
    """The web config's rate limit and basic auth (except on the probe paths), and its
    response headers."""

    def wrapped(environ: Environ, start: StartResponse) -> Iterable[bytes]:
        config = web.current()

        def start_with_headers(status: str, headers: list[tuple[str, str]],
                               *args: Any) -> Any:
            return start(status, [*headers, *config.headers], *args)

        def refuse(status: str, body: bytes, *extra: tuple[str, str]) -> Iterable[bytes]:
            start_with_headers(status, [*extra, ("Content-Type", "text/plain; charset=utf-8"),
                                        ("Content-Length", str(len(body)))])
            return [] if environ.get("REQUEST_METHOD") == "HEAD" else [body]

        if environ.get("PATH_INFO") in OPEN_PATHS:
            return app(environ, start_with_headers)
        if not web.allow(config):
            return refuse("429 Too Many Requests", b"too many requests\n")
        if not web.authorized(config, environ.get("HTTP_AUTHORIZATION")):
            return refuse("401 Unauthorized", b"unauthorized\n", (
                "WWW-Authenticate", 'Basic realm="macie-exporter", charset="UTF-8"'))
        return app(environ, start_with_headers)

    return wrapped


# The server. One selector thread accepts connections, runs TLS handshakes, feeds request
# bytes to h11 and writes responses, all without blocking; a fixed pool of workers only runs
# the app on complete requests. A client that is slow to send or to read therefore costs a
# socket and a buffer, never a thread, and cannot delay anyone else's scrape. Of the workers,
# at most BCRYPT_WORKERS check a password that is not cached yet: a flood of new wrong
# passwords waits in its own queue while scrapes with known credentials go on.

REQUEST_TIMEOUT = 10.0  # TLS handshake and request head, from accept or from the first byte
IDLE_TIMEOUT = 75.0  # between keep-alive requests; longer than Prometheus' default 1m interval
WRITE_TIMEOUT = 30.0  # the whole response, for a client that reads slowly or not at all
LINGER_TIMEOUT = 2.0  # after our FIN, unread request bytes are drained so no RST eats the answer
MAX_HEAD_BYTES = 16 * 1024  # request line and headers; larger gets 431
MAX_CONNECTIONS = 1024
WORKERS = 8
BCRYPT_WORKERS = 2
BACKLOG = 128  # socketserver's default of 5 overflowed when many scrapers connected at once
_FD_RESERVE = 128  # descriptors kept for everything else in the process (AWS calls, files)
_RECV_BYTES = 64 * 1024
_SEND_BYTES = 256 * 1024

_HANDSHAKE, _READING, _BUSY, _WRITING, _LINGER, _CLOSED = range(6)
# RFC 9110 §9: the methods an origin server knows; any other is 501, these are 405 here.
_KNOWN_METHODS = frozenset({b"GET", b"HEAD", b"POST", b"PUT", b"DELETE", b"CONNECT",
                            b"OPTIONS", b"TRACE", b"PATCH"})
# Control characters in a field value (h11 lets them through; RFC 9110 §5.5 does not).
_BAD_VALUE = re.compile(rb"[\x00-\x08\x0a-\x1f\x7f]")
_HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "upgrade", "te", "trailer",
               "proxy-authenticate", "proxy-authorization"}
_REASONS = {400: "Bad Request", 431: "Request Header Fields Too Large",
            501: "Not Implemented", 505: "HTTP Version Not Supported",
            500: "Internal Server Error"}


@dataclass(frozen=True, slots=True)
class _Request:
    method: str
    target: str
    version: str  # "1.0" or "1.1"
    headers: tuple[tuple[str, str], ...]
    body: bool  # it has a body (never read: the connection is closed after the answer)

    @property
    def path(self) -> str:
        return _split_target(self.target)[0]


def _split_target(target: str) -> tuple[str, str]:
    """(decoded path, query) of a request target in origin or absolute form."""
    if "://" in target:
        target = urlsplit(target)._replace(scheme="", netloc="").geturl() or "/"
    path, _, query = target.partition("?")
    return unquote(path, "latin-1"), query


class _Connection:
    __slots__ = ("allowed_sans", "client", "close_after", "deadline", "fed", "idle", "inbuf",
                 "notified", "out", "out_pos", "parser", "request", "rest", "server", "sock",
                 "state", "tls", "watching")

    def __init__(self, sock: socket.socket, client: tuple[str, int],
                 tls: ssl.SSLSocket | None, allowed_sans: Sequence[str],
                 server: tuple[str, str] = ("", "")) -> None:
        self.sock = sock
        self.client = client
        self.server = server  # (host, port) of the listening socket it came through
        self.tls = tls
        self.allowed_sans = allowed_sans
        self.state = _HANDSHAKE if tls else _READING
        self.deadline = 0.0
        self.idle = False  # between keep-alive requests (a new connection owes its request)
        self.inbuf = bytearray()  # received, not given to h11 yet
        self.parser = _parser()
        self.fed = 0  # bytes given to this request's parser
        self.request: _Request | None = None
        self.out = memoryview(b"")
        self.out_pos = 0
        self.rest: Iterator[bytes] | None = None  # a streamed body's pieces still to make
        self.close_after = False
        self.notified = False  # TLS close_notify sent
        self.watching = 0


def _parser() -> h11.Connection:
    """One request's parser: a request is parsed by a fresh h11 connection, fed the bytes left
    by the one before (without the empty lines RFC 9112 §2.2 lets a client send first)."""
    return h11.Connection(h11.SERVER, max_incomplete_event_size=MAX_HEAD_BYTES)


def _addresses(host: str, port: int) -> list[tuple[int, Any]]:
    """(family, socket address) to try for a listen address, as Go's net.Listen: no host or
    "::" is every interface over IPv6 and IPv4 (IPv4 alone where the host has no IPv6); an IP
    literal or a host name is what getaddrinfo gives for it."""
    if host in ("", "::"):
        return [(socket.AF_INET6, ("::", port)), (socket.AF_INET, ("0.0.0.0", port))]
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    return [(family, address) for family, _, _, _, address in infos]


class ListenError(OSError):
    """A listen address that could not be bound; `address` says which."""

    def __init__(self, host: str, port: int, error: OSError) -> None:
        super().__init__(error.errno, error.strerror or str(error))
        self.address = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _listen(host: str, port: int) -> socket.socket:
    error: OSError | None = None
    for family, address in _addresses(host, port):
        sock = socket.socket(family, socket.SOCK_STREAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if family == socket.AF_INET6 and address[0] == "::":
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)  # dual stack
            sock.bind(address)
            sock.listen(BACKLOG)
            sock.setblocking(False)
        except OSError as err:
            sock.close()
            error = error or err
            continue
        return sock
    raise error or OSError(f"no address for {host!r}")


def _connection_limit() -> int:
    """MAX_CONNECTIONS, with the soft open-file limit raised for it (Go programs raise theirs at
    start-up; many systems still default to 1,024), or fewer under a lower hard limit."""
    try:
        import resource
    except ImportError:  # not Unix
        return MAX_CONNECTIONS
    wanted = MAX_CONNECTIONS + _FD_RESERVE
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < wanted:
        raised = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (raised, hard))
            soft = raised
    if soft == resource.RLIM_INFINITY:
        return MAX_CONNECTIONS
    return max(16, min(MAX_CONNECTIONS, soft - _FD_RESERVE))


def _error_response(parser: h11.Connection, code: int, head: bool = False) -> bytes:
    """A plain error answer after which the connection is closed, serialised by the request's
    parser when its state allows (else by hand, in the same form); no body for a HEAD."""
    body = f"{_REASONS[code].lower()}\n".encode()
    headers = [("Date", formatdate(usegmt=True)), ("Content-Type", "text/plain; charset=utf-8"),
               ("Content-Length", str(len(body))), ("Connection", "close")]
    try:
        return b"".join((parser.send(h11.Response(status_code=code, headers=headers,
                                                  reason=_REASONS[code])),
                         b"" if head else parser.send(h11.Data(data=body)),
                         parser.send(h11.EndOfMessage())))
    except h11.LocalProtocolError:
        fields_ = "".join(f"{name}: {value}\r\n" for name, value in headers)
        return (f"HTTP/1.1 {code} {_REASONS[code]}\r\n{fields_}\r\n".encode("latin-1")
                + (b"" if head else body))


def _check(event: h11.Request) -> int | None:
    """The status for a request h11 accepts but this server must refuse (None: serve it)."""
    if event.http_version not in (b"1.0", b"1.1"):
        return 505
    if any(_BAD_VALUE.search(value) for _, value in event.headers):
        return 400
    if event.method not in _KNOWN_METHODS:
        return 501
    return None


def _close_body(body: object) -> None:
    """Close an app's body if it can be (PEP 3333), whole or not."""
    close = getattr(body, "close", None)
    if close is not None:
        close()


def _closing(result: Iterable[bytes]) -> Iterator[bytes]:
    """The app's iterable, closed once sent."""
    try:
        yield from result
    finally:
        _close_body(result)


def _rest(parser: h11.Connection, pieces: Iterator[bytes]) -> Iterator[bytes]:
    """A streamed body, serialised by the request's parser piece by piece (it checks the
    pieces add up to the Content-Length), then the end of the message."""
    try:
        for piece in pieces:
            if piece:
                yield parser.send(h11.Data(data=piece))
        yield parser.send(h11.EndOfMessage())
    finally:
        _close_body(pieces)


class _Worker:
    """Runs the app on one complete request and serialises its answer with the request's h11
    parser."""

    def __init__(self, app: WsgiApp) -> None:
        self.app = app

    def respond(self, request: _Request, parser: h11.Connection, client: tuple[str, int],
                https: bool, server: tuple[str, str] = ("", "")
                ) -> tuple[bytes, bool, int, Iterator[bytes] | None]:
        """(response bytes, close the connection after it, status code, the rest of the
        response when the app streams its body: made as it is sent)."""
        status, headers, answer = self._run(self._environ(request, client, https, server))
        code = int(status[:3])
        body, streamed = (answer, None) if isinstance(answer, bytes) else (b"", answer)
        out_headers = [(name, value) for name, value in headers
                       if name.lower() not in _HOP_BY_HOP]
        names = {name.lower() for name, _ in out_headers}
        if "date" not in names:
            out_headers.append(("Date", formatdate(usegmt=True)))
        no_body = request.method == "HEAD" or code in (204, 304) or 100 <= code < 200
        if streamed is not None and (no_body or "content-length" not in names):
            body, streamed = b"".join(streamed), None  # no length to stream by: whole
        if "content-length" not in names and (not no_body or (request.method == "HEAD"
                                                              and body)):
            out_headers.append(("Content-Length", str(len(body))))  # for HEAD, GET's length
        if request.body or any(name.lower() == "connection" and "close" in value.lower()
                               for name, value in headers):
            out_headers.append(("Connection", "close"))
        try:
            response = [parser.send(h11.Response(
                status_code=code, reason=status[4:].encode("latin-1"),
                headers=[(name.encode("latin-1"), value.encode("latin-1"))
                         for name, value in out_headers]))]
            if body and not no_body:
                response.append(parser.send(h11.Data(data=body)))
            if streamed is None:
                response.append(parser.send(h11.EndOfMessage()))
        except (h11.LocalProtocolError, UnicodeEncodeError) as err:
            log.error("http response not sent: the app's answer is not valid HTTP",
                      extra=fields(path=request.path, error=str(err)))
            return _error_response(_parser(), 500), True, 500, None
        log.debug("http request", extra=fields(
            client=client[0], method=request.method, target=request.target,
            version=f"HTTP/{request.version}", status=code,
            bytes=len(body) if streamed is None else next(
                value for name, value in out_headers if name.lower() == "content-length")))
        if streamed is not None:
            return b"".join(response), False, code, _rest(parser, streamed)
        return b"".join(response), parser.our_state is h11.MUST_CLOSE, code, None

    def _environ(self, request: _Request, client: tuple[str, int], https: bool,
                 server: tuple[str, str]) -> Environ:
        path, query = _split_target(request.target)
        environ: Environ = {
            "REQUEST_METHOD": request.method, "SCRIPT_NAME": "", "PATH_INFO": path,
            "QUERY_STRING": query, "SERVER_NAME": server[0], "SERVER_PORT": server[1],
            "SERVER_PROTOCOL": f"HTTP/{request.version}", "REMOTE_ADDR": client[0],
            "REMOTE_PORT": str(client[1]),
            "wsgi.version": (1, 0), "wsgi.url_scheme": "https" if https else "http",
            "wsgi.input": io.BytesIO(), "wsgi.errors": sys.stderr, "wsgi.multithread": True,
            "wsgi.multiprocess": False, "wsgi.run_once": False,
        }
        for name, value in request.headers:
            if "_" in name:  # X_Forwarded_For would pass for X-Forwarded-For (wsgiref drops them)
                continue
            key = name.upper().replace("-", "_")
            if key not in ("CONTENT_TYPE", "CONTENT_LENGTH"):
                key = f"HTTP_{key}"
            environ[key] = f"{environ[key]},{value}" if key in environ else value
        return environ

    def _run(self, environ: Environ
             ) -> tuple[str, list[tuple[str, str]], bytes | Iterator[bytes]]:
        started: list[tuple[str, list[tuple[str, str]]]] = []
        written: list[bytes] = []

        def start_response(status: str, headers: list[tuple[str, str]],
                           exc_info: Any = None) -> Callable[[bytes], None]:
            if started and not exc_info:
                raise AssertionError("start_response called twice without exc_info")
            started[:] = [(status, list(headers))]
            return written.append

        try:
            result = self.app(environ, start_response)
            if not isinstance(result, list | tuple) and not written and started and any(
                    name.lower() == "content-length" for name, _ in started[0][1]):
                # A body of known length made as it goes (a large exposition): sent as it
                # is made, not held whole (WSGI's iterable, PEP 3333).
                return started[0][0], started[0][1], _closing(result)
            try:
                chunks = [*written, *result]
            finally:
                _close_body(result)
            if not started:
                raise AssertionError("the app returned without calling start_response")
            status, headers = started[0]
            return status, headers, b"".join(chunks)
        except Exception:
            log.exception("http request failed", extra=fields(path=environ.get("PATH_INFO")))
            body = b"internal server error\n"
            return "500 Internal Server Error", [
                ("Content-Type", "text/plain; charset=utf-8"), ("Connection", "close"),
                ("Content-Length", str(len(body)))], body


class HttpServer:
    """The exporter's HTTP/1.1 server, bounded: see the module's note above REQUEST_TIMEOUT.

    It listens on `host`:`port` and on every address of `also`, and serves each the same: one
    selector thread, one pool of workers and one connection limit for all of them.
    """

    def __init__(self, host: str, port: int, app: WsgiApp,
                 web: WebConfigWatcher | None = None, stats: HttpStats | None = None,
                 also: Sequence[tuple[str, int]] = ()) -> None:
        self._listeners: list[socket.socket] = []
        for listen_host, listen_port in ((host, port), *also):
            try:
                self._listeners.append(_listen(listen_host, listen_port))
            except OSError as err:
                for listener in self._listeners:
                    listener.close()
                raise ListenError(listen_host, listen_port, err) from err
        self._bound = {listener.fileno(): listener.getsockname()[:2]
                       for listener in self._listeners}
        self._web = web
        self.stats = stats or HttpStats(())
        self._worker = _Worker(secure(app, web) if web else app)
        self.request_timeout = REQUEST_TIMEOUT
        self.idle_timeout = IDLE_TIMEOUT
        self.write_timeout = WRITE_TIMEOUT
        self.max_connections = _connection_limit()
        self._selector = selectors.DefaultSelector()
        self._wake_r, self._wake_w = socket.socketpair()
        for end in (self._wake_r, self._wake_w):
            end.setblocking(False)
        # Requests for the workers: `_jobs` first; `_bcrypt_jobs` (a password not cached yet)
        # by at most BCRYPT_WORKERS at a time.
        self._queue_lock = threading.Condition()
        self._jobs: deque[tuple[_Connection, _Request]] = deque()
        self._bcrypt_jobs: deque[tuple[_Connection, _Request]] = deque()
        self._bcrypt_busy = 0
        self._done: deque[tuple[_Connection, bytes, bool, Iterator[bytes] | None]] = deque()
        self._connections: dict[int, _Connection] = {}
        self._deadlines: list[tuple[float, int, _Connection]] = []
        self._sequence = 0
        self._accept_paused_until = 0.0
        self._stopping = False
        self._thread = threading.Thread(target=self._serve, name="http", daemon=True)
        self._workers = [threading.Thread(target=self._work, name=f"http-worker-{n}",
                                          daemon=True) for n in range(WORKERS)]

    @property
    def address(self) -> str:
        """The first address it listens on, as host:port."""
        return self.addresses[0]

    @property
    def addresses(self) -> list[str]:
        """Every address it listens on, as host:port, in the order given."""
        out = []
        for host, port in self._bound.values():
            text = host.decode() if isinstance(host, bytes) else str(host)
            out.append(f"[{text}]:{port}" if ":" in text else f"{text}:{port}")
        return out

    def _listen_all(self) -> None:
        for listener in self._listeners:
            self._selector.register(listener, selectors.EVENT_READ, "accept")

    def start(self) -> None:
        if self._web is not None:
            self._web.start()
        self._listen_all()
        self._selector.register(self._wake_r, selectors.EVENT_READ, "wake")
        for worker in self._workers:
            worker.start()
        self._thread.start()

    def stop(self) -> None:
        self._stopping = True
        self._wake()
        if self._thread.is_alive():
            self._thread.join(5)
        else:
            self._close_all()
        with self._queue_lock:
            self._queue_lock.notify_all()
        for worker in self._workers:
            if worker.is_alive():
                worker.join(1)
        if self._web is not None:
            self._web.stop()

    # Worker threads.

    def _next_job(self) -> tuple[tuple[_Connection, _Request], bool] | None:
        with self._queue_lock:
            while not self._stopping:
                if self._jobs:
                    return self._jobs.popleft(), False
                if self._bcrypt_jobs and self._bcrypt_busy < BCRYPT_WORKERS:
                    self._bcrypt_busy += 1
                    return self._bcrypt_jobs.popleft(), True
                self._queue_lock.wait()
        return None

    def _work(self) -> None:
        while (job := self._next_job()) is not None:
            (connection, request), bcrypt = job
            try:
                response, close, code, rest = self._worker.respond(
                    request, connection.parser, connection.client, connection.tls is not None,
                    connection.server)
            except Exception:  # a bug here must not cost the pool a thread
                log.exception("http request failed")
                response, close, code, rest = _error_response(_parser(), 500), True, 500, None
            finally:
                if bcrypt:
                    with self._queue_lock:
                        self._bcrypt_busy -= 1
                        self._queue_lock.notify()
            self.stats.answered(request.path, code)
            self._done.append((connection, response, close, rest))
            self._wake()

    def _wake(self) -> None:
        with contextlib.suppress(OSError):  # full: a wake-up is already pending
            self._wake_w.send(b"\0")

    # The selector thread: everything below runs in it only.

    def _serve(self) -> None:
        try:
            while not self._stopping:
                now = time.monotonic()
                timeout = 1.0
                if self._deadlines:
                    timeout = min(timeout, max(0.0, self._deadlines[0][0] - now))
                if self._accept_paused_until:
                    timeout = min(timeout, max(0.0, self._accept_paused_until - now))
                for key, _ in self._selector.select(timeout):
                    if key.data == "accept":
                        assert isinstance(key.fileobj, socket.socket)
                        self._accept(key.fileobj)
                    elif key.data == "wake":
                        with contextlib.suppress(OSError):
                            self._wake_r.recv(4096)
                    else:
                        self._guarded(self._ready, key.data)
                while self._done:
                    connection, response, close, rest = self._done.popleft()
                    if connection.state == _BUSY:
                        self._guarded(self._send, connection, response, close, rest)
                self._expire(time.monotonic())
        except Exception:
            log.exception("http server failed")
            raise
        finally:
            self._close_all()

    def _guarded(self, action: Callable[..., None], connection: _Connection, *args: Any) -> None:
        try:
            action(connection, *args)
        except Exception:  # one connection's bug must not stop the server
            log.exception("http connection failed", extra=fields(client=connection.client[0]))
            self._close(connection)

    def _close_all(self) -> None:
        for connection in list(self._connections.values()):
            self._close(connection)
        for sock in (*self._listeners, self._wake_r, self._wake_w):
            sock.close()
        self._selector.close()

    def _accept(self, listener: socket.socket) -> None:
        for _ in range(64):  # then let the open connections have a turn
            try:
                sock, address = listener.accept()
            except (BlockingIOError, InterruptedError, ConnectionAbortedError):
                return
            except OSError as err:
                if err.errno in (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM):
                    if not self._evict():
                        self._pause_accepting()
                else:
                    log.warning("http accept failed", extra=fields(error=str(err)))
                return
            if len(self._connections) >= self.max_connections and not self._evict():
                self.stats.dropped(reasons.CONNECTION_LIMIT)
                sock.close()  # every connection awaits its response: no room
                continue
            try:
                host, port = self._bound[listener.fileno()]
                self._opened(sock, address, (str(host), str(port)))
            except Exception:
                log.exception("http connection failed", extra=fields(client=address[0]))
                sock.close()

    def _pause_accepting(self) -> None:
        log.warning("http server out of file descriptors; not accepting for 0.1 s")
        for listener in self._listeners:
            self._selector.unregister(listener)
        self._accept_paused_until = time.monotonic() + 0.1

    def _evict(self) -> bool:
        """Make room: close the connection nearest its own deadline, not one that is sending
        or awaiting a response unless there is no other."""
        candidates = [c for c in self._connections.values() if c.state != _BUSY]
        if not candidates:
            return False
        victim = min(candidates, key=lambda c: (c.state == _WRITING, c.deadline))
        log.debug("http connection closed to make room", extra=fields(
            client=victim.client[0], max_connections=self.max_connections))
        if victim.state != _LINGER:
            self.stats.dropped(reasons.CONNECTION_LIMIT)
        self._close(victim)
        return True

    def _opened(self, sock: socket.socket, address: Any,
                server: tuple[str, str] = ("", "")) -> None:
        client = (str(address[0]), int(address[1]))
        sock.setblocking(False)
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        # The web config as it is now applies to the whole connection (a changed certificate
        # applies to the next connections).
        config = self._web.current() if self._web else None
        tls = None
        if config is not None and config.ssl_context is not None:
            try:
                tls = config.ssl_context.wrap_socket(sock, server_side=True,
                                                     do_handshake_on_connect=False)
            except (ssl.SSLError, OSError) as err:
                log.debug("TLS handshake failed", extra=fields(client=client[0], error=str(err)))
                self.stats.dropped(reasons.TLS_HANDSHAKE)
                sock.close()
                return
            sock = tls
        connection = _Connection(sock, client, tls, config.allowed_sans if config else (), server)
        self._connections[sock.fileno()] = connection
        self._set_deadline(connection, time.monotonic() + self.request_timeout)
        self._guarded(self._ready, connection)

    def _ready(self, connection: _Connection) -> None:
        if connection.state == _HANDSHAKE:
            self._handshake(connection)
        elif connection.state == _READING:
            self._read(connection)
        elif connection.state == _WRITING:
            self._write(connection)
        elif connection.state == _LINGER:
            self._linger(connection)

    def _watch(self, connection: _Connection, events: int) -> None:
        if connection.watching == events:
            return
        if connection.watching:
            self._selector.modify(connection.sock, events, connection)
        else:
            self._selector.register(connection.sock, events, connection)
        connection.watching = events

    def _unwatch(self, connection: _Connection) -> None:
        if connection.watching:
            connection.watching = 0
            with contextlib.suppress(KeyError, ValueError):
                self._selector.unregister(connection.sock)

    def _set_deadline(self, connection: _Connection, deadline: float) -> None:
        connection.deadline = deadline
        self._sequence += 1
        heapq.heappush(self._deadlines, (deadline, self._sequence, connection))
        if len(self._deadlines) > 4 * len(self._connections) + 64:  # superseded entries
            self._deadlines = []
            for live in self._connections.values():
                self._sequence += 1
                self._deadlines.append((live.deadline, self._sequence, live))
            heapq.heapify(self._deadlines)

    def _expire(self, now: float) -> None:
        if self._accept_paused_until and now >= self._accept_paused_until:
            self._accept_paused_until = 0.0
            self._listen_all()
        while self._deadlines and self._deadlines[0][0] <= now:
            deadline, _, connection = heapq.heappop(self._deadlines)
            if connection.state in (_CLOSED, _BUSY) or connection.deadline != deadline:
                continue  # superseded
            if connection.state in (_HANDSHAKE, _READING) and not connection.idle:
                log.debug("http request incomplete; connection dropped", extra=fields(
                    client=connection.client[0], timeout_seconds=self.request_timeout))
                self.stats.dropped(reasons.HEAD_TIMEOUT)
            elif connection.state == _READING:
                self.stats.dropped(reasons.IDLE_TIMEOUT)
            elif connection.state == _WRITING:
                log.debug("http response not read in time; connection dropped", extra=fields(
                    client=connection.client[0], timeout_seconds=self.write_timeout))
                self.stats.dropped(reasons.WRITE_TIMEOUT)
            self._close(connection)

    def _close(self, connection: _Connection) -> None:
        if connection.state == _CLOSED:
            return
        self._unwatch(connection)
        self._connections.pop(connection.sock.fileno(), None)
        connection.state = _CLOSED
        connection.inbuf = bytearray()
        connection.out = memoryview(b"")
        rest, connection.rest = connection.rest, None
        _close_body(rest)
        with contextlib.suppress(OSError):
            connection.sock.close()

    def _handshake(self, connection: _Connection) -> None:
        assert connection.tls is not None
        try:
            connection.tls.do_handshake()
        except ssl.SSLWantReadError:
            self._watch(connection, selectors.EVENT_READ)
            return
        except ssl.SSLWantWriteError:
            self._watch(connection, selectors.EVENT_WRITE)
            return
        except (ssl.SSLError, OSError) as err:
            log.debug("TLS handshake failed", extra=fields(client=connection.client[0],
                                                           error=str(err)))
            self.stats.dropped(reasons.TLS_HANDSHAKE)
            self._close(connection)
            return
        if connection.allowed_sans and not _san_allowed(connection.tls, connection.allowed_sans):
            log.debug("client certificate SAN not allowed",
                      extra=fields(client=connection.client[0]))
            self.stats.dropped(reasons.TLS_HANDSHAKE)
            self._close(connection)
            return
        connection.state = _READING
        self._read(connection)  # the request may have come with the handshake's last flight

    def _read(self, connection: _Connection) -> None:
        while True:
            if self._parse(connection):
                return
            try:
                data = connection.sock.recv(_RECV_BYTES)
            except (BlockingIOError, InterruptedError, ssl.SSLWantReadError):
                self._watch(connection, selectors.EVENT_READ)
                return
            except ssl.SSLWantWriteError:
                self._watch(connection, selectors.EVENT_WRITE)
                return
            except OSError:  # includes ssl.SSLError
                self._close(connection)
                return
            if not data:
                self._close(connection)
                return
            if connection.idle:
                connection.idle = False
                self._set_deadline(connection, time.monotonic() + self.request_timeout)
            connection.inbuf += data

    def _parse(self, connection: _Connection) -> bool:
        """Give h11 what it may take of the buffer (a head of at most MAX_HEAD_BYTES); True
        once the request is with the workers or refused."""
        if not connection.fed:
            del connection.inbuf[:len(connection.inbuf) - len(connection.inbuf.lstrip(b"\r\n"))]
        room = MAX_HEAD_BYTES + 1 - connection.fed
        if room > 0 and connection.inbuf:
            chunk = bytes(connection.inbuf[:room])
            del connection.inbuf[:room]
            connection.parser.receive_data(chunk)
            connection.fed += len(chunk)
        parser = connection.parser
        try:
            event = parser.next_event()
            if event is h11.NEED_DATA:
                return False
            if not isinstance(event, h11.Request):  # nothing else can come before a request
                raise h11.RemoteProtocolError(f"unexpected {type(event).__name__}")
            code = _check(event)
            if code is None:
                body = not isinstance(parser.next_event(), h11.EndOfMessage)
        except h11.RemoteProtocolError as err:
            self._refuse(connection, 431 if err.error_status_hint == 431 else 400, None, err)
            return True
        target = event.target.decode("ascii")  # h11 admits visible ASCII only
        if code is not None:
            self._refuse(connection, code, _split_target(target)[0], None,
                         head=event.method == b"HEAD")
            return True
        request = _Request(event.method.decode("ascii"), target,
                           event.http_version.decode("ascii"),
                           tuple((name.decode("latin-1"), value.decode("latin-1"))
                                 for name, value in event.headers), body)
        self._unwatch(connection)
        connection.state = _BUSY
        self._queue(connection, request)
        return True

    def _queue(self, connection: _Connection, request: _Request) -> None:
        bcrypt = False
        if self._web is not None and request.path not in OPEN_PATHS:
            authorization = next((value for name, value in request.headers
                                  if name.lower() == "authorization"), None)
            bcrypt = self._web.uncached(self._web.current(), authorization)
        with self._queue_lock:
            (self._bcrypt_jobs if bcrypt else self._jobs).append((connection, request))
            self._queue_lock.notify()

    def _refuse(self, connection: _Connection, code: int, path: str | None,
                error: Exception | None, head: bool = False) -> None:
        log.debug("http request refused", extra=fields(
            client=connection.client[0], status=code, error=str(error) if error else None))
        self.stats.answered(path, code)
        self.stats.dropped(reasons.MALFORMED)
        self._send(connection, _error_response(connection.parser, code, head), close=True)

    def _send(self, connection: _Connection, response: bytes, close: bool,
              rest: Iterator[bytes] | None = None) -> None:
        connection.state = _WRITING
        connection.out, connection.out_pos = memoryview(response), 0
        connection.rest = rest
        connection.close_after = close
        self._set_deadline(connection, time.monotonic() + self.write_timeout)
        self._write(connection)

    def _write(self, connection: _Connection) -> None:
        out = connection.out
        while True:
            if connection.out_pos >= len(out):
                rest = connection.rest
                if rest is None:
                    break
                try:
                    piece = next(rest, None)
                except h11.LocalProtocolError as err:  # the app's pieces miss its length
                    log.error("http response cut short: the app's body does not match its "
                              "Content-Length", extra=fields(client=connection.client[0],
                                                             error=str(err)))
                    self._close(connection)
                    return
                if piece is None:  # the message has ended: its parser says what follows
                    connection.rest = None
                    connection.close_after = connection.close_after or (
                        connection.parser.our_state is h11.MUST_CLOSE)
                    break
                out = connection.out = memoryview(piece)
                connection.out_pos = 0
                continue
            try:
                # OpenSSL wants a retried write repeated as it was: fixed chunks from where the
                # last complete send ended.
                sent = connection.sock.send(out[connection.out_pos:
                                                connection.out_pos + _SEND_BYTES])
            except (BlockingIOError, InterruptedError, ssl.SSLWantWriteError):
                self._watch(connection, selectors.EVENT_WRITE)
                return
            except ssl.SSLWantReadError:
                self._watch(connection, selectors.EVENT_READ)
                return
            except OSError:
                self._close(connection)
                return
            connection.out_pos += sent
        connection.out = memoryview(b"")
        if connection.close_after:
            connection.state = _LINGER
            connection.inbuf = bytearray()
            self._set_deadline(connection, time.monotonic() + LINGER_TIMEOUT)
            self._linger(connection)
            return
        # The next request: a fresh parser, fed what the last one had not used.
        connection.inbuf[:0] = connection.parser.trailing_data[0]
        connection.parser, connection.fed = _parser(), 0
        connection.state = _READING
        del connection.inbuf[:len(connection.inbuf) - len(connection.inbuf.lstrip(b"\r\n"))]
        connection.idle = not connection.inbuf
        self._set_deadline(connection, time.monotonic() + (
            self.idle_timeout if connection.idle else self.request_timeout))
        # A pipelined request may already wait in our buffer, or in OpenSSL's, where the
        # selector cannot see it.
        self._read(connection)

    def _linger(self, connection: _Connection) -> None:
        """Close our side (TLS close_notify, then FIN) and drain what the client still sends,
        so that no RST eats the answer; closed at EOF or LINGER_TIMEOUT."""
        if not connection.notified:
            if connection.tls is not None:
                try:
                    connection.tls.unwrap()  # sends close_notify
                except ssl.SSLWantReadError:
                    pass  # ours is sent; the client's may come or not
                except ssl.SSLWantWriteError:
                    self._watch(connection, selectors.EVENT_WRITE)
                    return
                except OSError:  # includes ssl.SSLError
                    self._close(connection)
                    return
            try:
                socket.socket.shutdown(connection.sock, socket.SHUT_WR)
            except OSError:
                self._close(connection)
                return
            connection.notified = True
        for _ in range(16):
            try:
                data = connection.sock.recv(_RECV_BYTES)
            except (BlockingIOError, InterruptedError, ssl.SSLWantReadError):
                self._watch(connection, selectors.EVENT_READ)
                return
            except OSError:
                data = b""
            if not data:
                self._close(connection)
                return
        self._watch(connection, selectors.EVENT_READ)


def _san_allowed(connection: ssl.SSLSocket, allowed: Sequence[str]) -> bool:
    certificate: dict[str, Any] = dict(connection.getpeercert() or {})
    names = {str(entry[1]) for entry in certificate.get("subjectAltName", ())}
    return bool(names & set(allowed))
