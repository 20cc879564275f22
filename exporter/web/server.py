"""HTTP endpoints: metrics, /healthz, /readyz and a landing page. Never calls AWS."""

from __future__ import annotations

import contextlib
import errno
import heapq
import html
import io
import logging
import queue
import re
import selectors
import socket
import ssl
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from email.utils import formatdate
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

from exporter import __version__
from exporter.logs import fields
from exporter.render.exposition import CachedExposition
from exporter.web.webconfig import WebConfigWatcher

log = logging.getLogger(__name__)

StartResponse = Callable[..., Any]
Environ = dict[str, Any]


WsgiApp = Callable[[Environ, StartResponse], Iterable[bytes]]


def make_app(telemetry_path: str, exposition: CachedExposition) -> WsgiApp:
    """The WSGI app. Metrics, `name[]` filters included, come from the per-snapshot cache.
    /readyz follows the snapshot that /metrics serves."""
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
            names = parse_qs(environ.get("QUERY_STRING", "")).get("name[]")
            headers, body = exposition.render(environ.get("HTTP_ACCEPT"),
                                              environ.get("HTTP_ACCEPT_ENCODING"), names)
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


# The server. One selector thread accepts connections, runs TLS handshakes, reads request heads
# and writes responses, all without blocking; a fixed pool of workers only runs the app on
# complete requests. A client that is slow to send or to read therefore costs a socket and a
# buffer, never a thread, and cannot delay anyone else's scrape.

REQUEST_TIMEOUT = 10.0  # TLS handshake and request head, from accept or from the first byte
IDLE_TIMEOUT = 75.0  # between keep-alive requests; longer than Prometheus' default 1m interval
WRITE_TIMEOUT = 30.0  # the whole response, for a client that reads slowly or not at all
LINGER_TIMEOUT = 2.0  # after our FIN, unread request bytes are drained so no RST eats the answer
MAX_HEAD_BYTES = 16 * 1024  # request line and headers; larger gets 431
MAX_CONNECTIONS = 1024
WORKERS = 8
BACKLOG = 128  # socketserver's default of 5 overflowed when many scrapers connected at once
_FD_RESERVE = 128  # descriptors kept for everything else in the process (AWS calls, files)
_RECV_BYTES = 64 * 1024
_SEND_BYTES = 256 * 1024

_HANDSHAKE, _READING, _BUSY, _WRITING, _LINGER, _CLOSED = range(6)
_HEAD_END = re.compile(rb"\r?\n\r?\n")
_LINE_END = re.compile(r"\r?\n")
_TOKEN = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")
_BAD_VALUE = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")
_HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "upgrade", "te", "trailer",
               "proxy-authenticate", "proxy-authorization"}
_NO_BODY_STATUS = re.compile(r"(1\d\d|204|304)\b")


class _BadRequest(Exception):
    def __init__(self, status: str) -> None:
        super().__init__(status)
        self.status = status


class _Connection:
    __slots__ = ("allowed_sans", "client", "close_after", "deadline", "idle", "inbuf", "out",
                 "out_pos", "sock", "state", "tls", "watching")

    def __init__(self, sock: socket.socket, client: tuple[str, int],
                 tls: ssl.SSLSocket | None, allowed_sans: Sequence[str]) -> None:
        self.sock = sock
        self.client = client
        self.tls = tls
        self.allowed_sans = allowed_sans
        self.state = _HANDSHAKE if tls else _READING
        self.deadline = 0.0
        self.idle = False  # between keep-alive requests (a new connection owes its request)
        self.inbuf = bytearray()
        self.out = memoryview(b"")
        self.out_pos = 0
        self.close_after = False
        self.watching = 0


def _listen(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(BACKLOG)
        sock.setblocking(False)
    except OSError:
        sock.close()
        raise
    return sock


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


def _simple_response(status: str) -> bytes:
    """An error answer; the connection is closed after it."""
    body = f"{status.split(' ', 1)[1].lower()}\n".encode()
    return (f"HTTP/1.1 {status}\r\nDate: {formatdate(usegmt=True)}\r\n"
            f"Content-Type: text/plain; charset=utf-8\r\nContent-Length: {len(body)}\r\n"
            "Connection: close\r\n\r\n").encode("latin-1") + body


def _parse_head(head: bytes) -> tuple[str, str, str, list[tuple[str, str]]]:
    """(method, target, version, headers) of a request head; _BadRequest when malformed."""
    lines = _LINE_END.split(head.decode("latin-1"))
    parts = lines[0].split(" ")
    if len(parts) != 3 or not _TOKEN.fullmatch(parts[0]) or not parts[1]:
        raise _BadRequest("400 Bad Request")
    method, target, version = parts
    if version not in ("HTTP/1.0", "HTTP/1.1"):
        status = ("505 HTTP Version Not Supported" if re.fullmatch(r"HTTP/\d+(\.\d+)?", version)
                  else "400 Bad Request")
        raise _BadRequest(status)
    headers = []
    for line in lines[1:]:
        if not line:
            continue
        name, colon, value = line.partition(":")
        # A folded line (leading whitespace) or space before the colon: refused, as RFC 9112 asks.
        if not colon or not _TOKEN.fullmatch(name):
            raise _BadRequest("400 Bad Request")
        value = value.strip(" \t")
        if _BAD_VALUE.search(value):
            raise _BadRequest("400 Bad Request")
        headers.append((name, value))
    return method, target, version, headers


class _Worker:
    """Runs the app on one complete request head and returns the whole response."""

    def __init__(self, app: WsgiApp, host: Any, port: int) -> None:
        self.app = app
        self.host = str(host)
        self.port = str(port)

    def respond(self, head: bytes, client: tuple[str, int], https: bool) -> tuple[bytes, bool]:
        """(response bytes, close the connection after it)."""
        try:
            method, target, version, headers = _parse_head(head)
        except _BadRequest as err:
            return _simple_response(err.status), True
        by_name: dict[str, str] = {}
        for name, value in headers:
            key = name.lower()
            by_name[key] = f"{by_name[key]},{value}" if key in by_name else value
        close = version == "HTTP/1.0" or "close" in {
            token.strip().lower() for token in by_name.get("connection", "").split(",")}
        length = by_name.get("content-length")
        if "transfer-encoding" in by_name:
            if length is not None:  # both: the stuff of request smuggling
                return _simple_response("400 Bad Request"), True
            close = True  # bodies are never read (GET and HEAD only): answer, then close
        elif length is not None:
            lengths = {part.strip() for part in length.split(",")}
            if len(lengths) != 1 or not (length := lengths.pop()).isdigit():
                return _simple_response("400 Bad Request"), True
            close = close or int(length) > 0
        environ = self._environ(method, target, version, headers, client, https)
        status, response_headers, body = self._run(environ)
        names = {name.lower() for name, _ in response_headers}
        if any(name.lower() == "connection" and "close" in value.lower()
               for name, value in response_headers):
            close = True
        lines = [f"HTTP/1.1 {status}"]
        lines += [f"{name}: {value}" for name, value in response_headers
                  if name.lower() not in _HOP_BY_HOP]
        if "date" not in names:
            lines.append(f"Date: {formatdate(usegmt=True)}")
        no_body = method == "HEAD" or bool(_NO_BODY_STATUS.match(status))
        if "content-length" not in names and (not no_body or (method == "HEAD" and body)):
            lines.append(f"Content-Length: {len(body)}")  # for HEAD, the length GET would have
        if close:
            lines.append("Connection: close")
        try:
            encoded = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
        except UnicodeEncodeError:
            log.error("http response header not latin-1", extra=fields(path=target))
            return _simple_response("500 Internal Server Error"), True
        log.debug("http request", extra=fields(
            client=client[0], request=f'"{method} {target} {version}" {status.split(" ")[0]} '
                                      f'{len(body)}'))
        return encoded if no_body else encoded + body, close

    def _environ(self, method: str, target: str, version: str, headers: list[tuple[str, str]],
                 client: tuple[str, int], https: bool) -> Environ:
        if "://" in target:  # absolute form
            target = urlsplit(target)._replace(scheme="", netloc="").geturl() or "/"
        path, _, query = target.partition("?")
        environ: Environ = {
            "REQUEST_METHOD": method, "SCRIPT_NAME": "", "PATH_INFO": unquote(path, "latin-1"),
            "QUERY_STRING": query, "SERVER_NAME": self.host, "SERVER_PORT": self.port,
            "SERVER_PROTOCOL": version, "REMOTE_ADDR": client[0], "REMOTE_PORT": str(client[1]),
            "wsgi.version": (1, 0), "wsgi.url_scheme": "https" if https else "http",
            "wsgi.input": io.BytesIO(), "wsgi.errors": sys.stderr, "wsgi.multithread": True,
            "wsgi.multiprocess": False, "wsgi.run_once": False,
        }
        for name, value in headers:
            if "_" in name:  # X_Forwarded_For would pass for X-Forwarded-For (wsgiref drops them)
                continue
            key = name.upper().replace("-", "_")
            if key not in ("CONTENT_TYPE", "CONTENT_LENGTH"):
                key = f"HTTP_{key}"
            environ[key] = f"{environ[key]},{value}" if key in environ else value
        return environ

    def _run(self, environ: Environ) -> tuple[str, list[tuple[str, str]], bytes]:
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
            try:
                chunks = [*written, *result]
            finally:
                close = getattr(result, "close", None)
                if close is not None:
                    close()
            if not started:
                raise AssertionError("the app returned without calling start_response")
            status, headers = started[0]
            if any(_BAD_VALUE.search(f"{name}{value}") for name, value in headers):
                raise ValueError("control characters in a response header")
            return status, headers, b"".join(chunks)
        except Exception:
            log.exception("http request failed", extra=fields(path=environ.get("PATH_INFO")))
            body = b"internal server error\n"
            return "500 Internal Server Error", [
                ("Content-Type", "text/plain; charset=utf-8"), ("Connection", "close"),
                ("Content-Length", str(len(body)))], body


class HttpServer:
    """The exporter's HTTP/1.1 server, bounded: see the module's note above REQUEST_TIMEOUT."""

    def __init__(self, host: str, port: int, app: WsgiApp,
                 web: WebConfigWatcher | None = None) -> None:
        self._listener = _listen(host, port)
        self._bound = self._listener.getsockname()
        self._web = web
        self._worker = _Worker(secure(app, web) if web else app, *self._bound[:2])
        self.request_timeout = REQUEST_TIMEOUT
        self.idle_timeout = IDLE_TIMEOUT
        self.write_timeout = WRITE_TIMEOUT
        self.max_connections = _connection_limit()
        self._selector = selectors.DefaultSelector()
        self._wake_r, self._wake_w = socket.socketpair()
        for end in (self._wake_r, self._wake_w):
            end.setblocking(False)
        self._jobs: queue.SimpleQueue[tuple[_Connection, bytes] | None] = queue.SimpleQueue()
        self._done: deque[tuple[_Connection, bytes, bool]] = deque()
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
        host, port = self._bound[:2]
        text = host.decode() if isinstance(host, bytes) else str(host)
        return f"[{text}]:{port}" if ":" in text else f"{text}:{port}"

    def start(self) -> None:
        self._selector.register(self._listener, selectors.EVENT_READ, "accept")
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
        for _ in self._workers:
            self._jobs.put(None)
        for worker in self._workers:
            if worker.is_alive():
                worker.join(1)

    # Worker threads.

    def _work(self) -> None:
        while (job := self._jobs.get()) is not None:
            connection, head = job
            try:
                response, close = self._worker.respond(head, connection.client,
                                                       connection.tls is not None)
            except Exception:  # a bug here must not cost the pool a thread
                log.exception("http request failed")
                response, close = _simple_response("500 Internal Server Error"), True
            self._done.append((connection, response, close))
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
                        self._accept()
                    elif key.data == "wake":
                        with contextlib.suppress(OSError):
                            self._wake_r.recv(4096)
                    else:
                        self._guarded(self._ready, key.data)
                while self._done:
                    connection, response, close = self._done.popleft()
                    if connection.state == _BUSY:
                        self._guarded(self._send, connection, response, close)
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
        for sock in (self._listener, self._wake_r, self._wake_w):
            sock.close()
        self._selector.close()

    def _accept(self) -> None:
        for _ in range(64):  # then let the open connections have a turn
            try:
                sock, address = self._listener.accept()
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
                sock.close()  # every connection awaits its response: no room
                continue
            try:
                self._opened(sock, address)
            except Exception:
                log.exception("http connection failed", extra=fields(client=address[0]))
                sock.close()

    def _pause_accepting(self) -> None:
        log.warning("http server out of file descriptors; not accepting for 0.1 s")
        self._selector.unregister(self._listener)
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
        self._close(victim)
        return True

    def _opened(self, sock: socket.socket, address: Any) -> None:
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
                sock.close()
                return
            sock = tls
        connection = _Connection(sock, client, tls, config.allowed_sans if config else ())
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
            self._drain(connection)

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
            self._selector.register(self._listener, selectors.EVENT_READ, "accept")
        while self._deadlines and self._deadlines[0][0] <= now:
            deadline, _, connection = heapq.heappop(self._deadlines)
            if connection.state in (_CLOSED, _BUSY) or connection.deadline != deadline:
                continue  # superseded
            if connection.state in (_HANDSHAKE, _READING) and not connection.idle:
                log.debug("http request incomplete; connection dropped", extra=fields(
                    client=connection.client[0], timeout_seconds=self.request_timeout))
            elif connection.state == _WRITING:
                log.debug("http response not read in time; connection dropped", extra=fields(
                    client=connection.client[0], timeout_seconds=self.write_timeout))
            self._close(connection)

    def _close(self, connection: _Connection) -> None:
        if connection.state == _CLOSED:
            return
        self._unwatch(connection)
        self._connections.pop(connection.sock.fileno(), None)
        connection.state = _CLOSED
        connection.inbuf = bytearray()
        connection.out = memoryview(b"")
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
            self._close(connection)
            return
        if connection.allowed_sans and not _san_allowed(connection.tls, connection.allowed_sans):
            log.debug("client certificate SAN not allowed",
                      extra=fields(client=connection.client[0]))
            self._close(connection)
            return
        connection.state = _READING
        self._read(connection)  # the request may have come with the handshake's last flight

    def _read(self, connection: _Connection) -> None:
        while True:
            if self._dispatch(connection):
                return
            if len(connection.inbuf) > MAX_HEAD_BYTES:
                self._send(connection, _simple_response("431 Request Header Fields Too Large"),
                           close=True)
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
            if not connection.inbuf:
                data = data.lstrip(b"\r\n")  # blank lines before a request are allowed
            if data and connection.idle:
                connection.idle = False
                self._set_deadline(connection, time.monotonic() + self.request_timeout)
            connection.inbuf += data

    def _dispatch(self, connection: _Connection) -> bool:
        """Hand a complete request head in the buffer to the workers; bytes after it stay."""
        end = _HEAD_END.search(connection.inbuf)
        if end is None:
            return False
        if end.start() > MAX_HEAD_BYTES:
            self._send(connection, _simple_response("431 Request Header Fields Too Large"),
                       close=True)
            return True
        head = bytes(connection.inbuf[:end.start()])
        del connection.inbuf[:end.end()]
        self._unwatch(connection)
        connection.state = _BUSY
        self._jobs.put((connection, head))
        return True

    def _send(self, connection: _Connection, response: bytes, close: bool) -> None:
        connection.state = _WRITING
        connection.out, connection.out_pos = memoryview(response), 0
        connection.close_after = close
        self._set_deadline(connection, time.monotonic() + self.write_timeout)
        self._write(connection)

    def _write(self, connection: _Connection) -> None:
        out = connection.out
        while connection.out_pos < len(out):
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
            self._linger(connection)
            return
        connection.state = _READING
        del connection.inbuf[:len(connection.inbuf) - len(connection.inbuf.lstrip(b"\r\n"))]
        connection.idle = not connection.inbuf
        self._set_deadline(connection, time.monotonic() + (
            self.idle_timeout if connection.idle else self.request_timeout))
        # A pipelined request may already wait in our buffer, or in OpenSSL's, where the
        # selector cannot see it.
        self._read(connection)

    def _linger(self, connection: _Connection) -> None:
        try:
            connection.sock.shutdown(socket.SHUT_WR)
        except OSError:
            self._close(connection)
            return
        connection.state = _LINGER
        connection.inbuf = bytearray()
        self._set_deadline(connection, time.monotonic() + LINGER_TIMEOUT)
        self._drain(connection)

    def _drain(self, connection: _Connection) -> None:
        for _ in range(16):
            try:
                data = connection.sock.recv(_RECV_BYTES)
            except (BlockingIOError, InterruptedError):
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
