"""The bounded HTTP server: slow and idle clients are dropped, never given a thread."""

from __future__ import annotations

import errno
import http.client
import re
import resource
import select
import socket
import ssl
import threading
import time
import urllib.request
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any, BinaryIO

import pytest
import yaml
from cryptography import x509
from cryptography.x509.oid import NameOID

from exporter.web.server import REQUEST_TIMEOUT, HttpServer, ListenError
from exporter.web.webconfig import WebConfigWatcher
from tests.certs import Authority
from tests.conftest import ExporterProcess, wait_for

Serve = Callable[..., HttpServer]


def echo(environ: dict[str, Any], start: Callable[..., Any]) -> Iterable[bytes]:
    body = f"{environ['REQUEST_METHOD']} {environ['PATH_INFO']}\n".encode()
    start("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]


@pytest.fixture
def serve() -> Iterator[Serve]:
    """An in-process HttpServer on 127.0.0.1; keyword arguments override its timeouts."""
    servers: list[HttpServer] = []

    def make(app: Callable[..., Iterable[bytes]] = echo, web: WebConfigWatcher | None = None,
             **settings: float) -> HttpServer:
        server = HttpServer("127.0.0.1", 0, app, web)
        for name, value in settings.items():
            setattr(server, name, value)
        server.start()
        servers.append(server)
        return server

    yield make
    for server in servers:
        server.stop()


def endpoint(address: str) -> tuple[str, int]:
    host, _, port = address.rpartition(":")
    return host, int(port)


def connect(address: str) -> socket.socket:
    return socket.create_connection(endpoint(address), timeout=10)


def read_response(stream: BinaryIO, head: bool = False) -> tuple[int, dict[str, str], bytes]:
    """One response off a stream that may hold more (http.client closes its file after one)."""
    status_line = stream.readline()
    if not status_line:
        raise EOFError("connection closed")
    headers: dict[str, str] = {}
    while (line := stream.readline()) not in (b"\r\n", b""):
        name, _, value = line.decode("latin-1").partition(":")
        headers[name.strip().lower()] = value.strip()
    body = b"" if head else stream.read(int(headers.get("content-length", "0")))
    return int(status_line.split()[1]), headers, body


def closed_by_peer(sock: socket.socket, timeout: float) -> float:
    """Seconds until the server closes `sock` (EOF or reset), reading whatever comes first."""
    began = time.monotonic()
    sock.settimeout(timeout)
    try:
        while sock.recv(65536):
            pass
    except ConnectionResetError:
        pass
    return time.monotonic() - began


def threads_of(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("Threads:"):
            return int(line.split()[1])
    raise AssertionError("no Threads line")


def raise_open_file_limit(wanted: int) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < wanted:
        limit = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
        resource.setrlimit(resource.RLIMIT_NOFILE, (limit, hard))
        assert limit >= wanted, f"the hard open-file limit ({hard}) is below {wanted}"


def get(address: str, path: str = "/metrics", timeout: float = 5,
        context: ssl.SSLContext | None = None) -> int:
    scheme = "https" if context else "http"
    with urllib.request.urlopen(f"{scheme}://{address}{path}", timeout=timeout,
                                context=context) as response:
        response.read()
        return int(response.status)


def test_incomplete_request_is_dropped(demo_exporter: ExporterProcess) -> None:
    partial, silent = connect(demo_exporter.address), connect(demo_exporter.address)
    partial.sendall(b"GET /metrics HTTP/1.1\r\nHost: exporter\r\n")
    waited: list[float] = []
    other = threading.Thread(target=lambda: waited.append(closed_by_peer(silent, 30)))
    other.start()
    elapsed = closed_by_peer(partial, 30)
    other.join(30)
    # Dropped by the server's request deadline, not earlier; generous above it for slow CI.
    for seconds in (elapsed, *waited):
        assert REQUEST_TIMEOUT - 1 <= seconds < REQUEST_TIMEOUT + 5
    assert len(waited) == 1
    assert get(demo_exporter.address) == 200


def test_idle_keep_alive_connection_is_closed(serve: Serve) -> None:
    server = serve(idle_timeout=0.5)
    with connect(server.address) as sock, sock.makefile("rb") as stream:
        sock.sendall(b"GET /one HTTP/1.1\r\nHost: x\r\n\r\n")
        status, headers, body = read_response(stream)
        assert (status, body) == (200, b"GET /one\n")
        assert "connection" not in headers  # kept alive
        assert closed_by_peer(sock, 10) < 10


def test_default_idle_timeout_is_set(serve: Serve) -> None:
    server = serve()
    assert 0 < server.idle_timeout <= 120
    assert server.request_timeout == REQUEST_TIMEOUT == 10


def test_thousand_half_open_requests_cost_no_threads(demo_exporter: ExporterProcess) -> None:
    raise_open_file_limit(1000 + 256)
    wait_for(lambda: demo_exporter.get("/readyz")[0] == 200, what="the exporter to be ready")
    pid, address = demo_exporter.proc.pid, demo_exporter.address
    before = threads_of(pid)
    attackers: list[socket.socket] = []
    try:
        for n in range(1000):
            sock = connect(address)
            sock.sendall(b"GET /metrics HTTP/1.1\r\nHost: exporter\r\nX-Padding: " + b"a" * n)
            attackers.append(sock)
        statuses = [get(address, timeout=5) for _ in range(3)]
        during = threads_of(pid)
        poller = select.poll()
        for sock in attackers:
            poller.register(sock, select.POLLIN)
        dropped = poller.poll(0)  # a closed connection reads as EOF
    finally:
        for sock in attackers:
            sock.close()
    assert statuses == [200, 200, 200]
    assert during - before <= 64, (before, during)
    assert dropped == [], f"{len(dropped)} of the 1,000 dropped early"


def test_keep_alive_serves_several_requests(demo_exporter: ExporterProcess) -> None:
    connection = http.client.HTTPConnection(*endpoint(demo_exporter.address), timeout=10)
    statuses, sockets = [], []
    try:
        for path in ("/metrics", "/healthz", "/", "/metrics", "/nope"):
            connection.request("GET", path)
            response = connection.getresponse()
            response.read()
            statuses.append(response.status)
            sockets.append(connection.sock)
    finally:
        connection.close()
    assert statuses == [200, 200, 200, 200, 404]
    assert all(sock is sockets[0] for sock in sockets)  # one connection throughout


def test_head(demo_exporter: ExporterProcess) -> None:
    connection = http.client.HTTPConnection(*endpoint(demo_exporter.address), timeout=10)
    try:
        connection.request("HEAD", "/metrics")
        response = connection.getresponse()
        assert response.status == 200
        assert int(response.headers["Content-Length"]) > 0
        assert response.read() == b""
        connection.request("GET", "/healthz")  # the stream is still in step
        response = connection.getresponse()
        assert (response.status, response.read()) == (200, b"ok\n")
        connection.request("POST", "/metrics")
        response = connection.getresponse()
        assert response.status == 405
    finally:
        connection.close()


def test_pipelined_requests(serve: Serve) -> None:
    server = serve()
    with connect(server.address) as sock, sock.makefile("rb") as stream:
        sock.sendall(b"GET /a HTTP/1.1\r\nHost: x\r\n\r\n"
                     b"HEAD /b HTTP/1.1\r\nHost: x\r\n\r\n"
                     b"GET /c HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
                     b"GET /never HTTP/1.1\r\nHost: x\r\n\r\n")
        first, second, third = (read_response(stream), read_response(stream, head=True),
                                read_response(stream))
        assert (first[0], first[2]) == (200, b"GET /a\n")
        assert (second[0], second[1]["content-length"]) == (200, "8")  # "HEAD /b\n"
        assert (third[0], third[1]["connection"], third[2]) == (200, "close", b"GET /c\n")
        assert stream.read() == b""  # closed after the Connection: close request


class StreamedApp:
    """Answers every request with a body of known length made piece by piece (as an
    uncompressed exposition is); `short` makes one piece fewer than the length says."""

    def __init__(self, pieces: int = 40, size: int = 100_000, short: bool = False) -> None:
        self.pieces, self.size, self.short = pieces, size, short
        self.made = 0  # pieces made so far, over every request
        self.closed = 0  # bodies closed (sent whole or not)

    def body(self, path: str) -> bytes:
        return b"".join(self.piece(path, n) for n in range(self.pieces))

    def piece(self, path: str, n: int) -> bytes:
        return (f"{path} {n}\n".encode() * self.size)[:self.size]

    def __call__(self, environ: dict[str, Any], start: Callable[..., Any]) -> Iterable[bytes]:
        path = environ["PATH_INFO"]
        start("200 OK", [("Content-Type", "text/plain"),
                         ("Content-Length", str(self.pieces * self.size))])

        def pieces() -> Iterator[bytes]:
            try:
                for n in range(self.pieces - self.short):
                    self.made += 1
                    yield self.piece(path, n)
            finally:
                self.closed += 1
        return pieces()


def test_a_body_of_known_length_is_streamed_on_a_keep_alive_connection(serve: Serve) -> None:
    app = StreamedApp()
    server = serve(app)
    with connect(server.address) as sock, sock.makefile("rb") as stream:
        sock.sendall(b"GET /a HTTP/1.1\r\nHost: x\r\n\r\nGET /b HTTP/1.1\r\nHost: x\r\n\r\n")
        first, second = read_response(stream), read_response(stream)
        assert first[2] == app.body("/a") and second[2] == app.body("/b")
        sock.sendall(b"HEAD /c HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        third = read_response(stream, head=True)
        assert third[1]["content-length"] == str(app.pieces * app.size)
        assert stream.read() == b""
    assert app.closed == 3


def test_a_streamed_body_is_made_as_the_client_reads_it(serve: Serve) -> None:
    app = StreamedApp(pieces=400)  # 40 MB: far more than the socket buffers hold
    server = serve(app)
    with connect(server.address) as sock, sock.makefile("rb") as stream:
        sock.sendall(b"GET /slow HTTP/1.1\r\nHost: x\r\n\r\n")
        seen = [-1]

        def settled() -> bool:  # the buffers are full: nothing more is made
            time.sleep(0.2)
            before, seen[0] = seen[0], app.made
            return before == app.made > 0
        wait_for(settled, what="the server waiting for the client")
        assert app.made < app.pieces / 2
        assert read_response(stream)[2] == app.body("/slow")
    assert app.made == app.pieces
    wait_for(lambda: app.closed == 1, what="the body closed once sent")


def test_a_streamed_body_shorter_than_its_length_closes_the_connection(
        serve: Serve, caplog: pytest.LogCaptureFixture) -> None:
    server = serve(StreamedApp(pieces=3, short=True))
    with connect(server.address) as sock, sock.makefile("rb") as stream:
        sock.sendall(b"GET /short HTTP/1.1\r\nHost: x\r\n\r\n")
        assert stream.readline().startswith(b"HTTP/1.1 200")
        assert closed_by_peer(sock, 10) < 10
    assert [r.getMessage() for r in caplog.records if r.levelname == "ERROR"] == [
        "http response cut short: the app's body does not match its Content-Length"]
    assert not any(r.exc_info for r in caplog.records)
    with connect(server.address) as sock, sock.makefile("rb") as stream:  # it goes on
        sock.sendall(b"GET /again HTTP/1.1\r\nHost: x\r\n\r\n")
        assert stream.readline().startswith(b"HTTP/1.1 200")


@pytest.mark.parametrize(("request_bytes", "status"), [
    (b"GET /old HTTP/1.0\r\n\r\n", 200),
    (b"POST /form HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello", 200),
    (b"POST /form HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
     200),
    (b"POST /x HTTP/1.1\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n", 400),
    (b"GET /x HTTP/1.1\r\nContent-Length: 1, 2\r\n\r\n", 400),
    (b"this is not http\r\n\r\n", 400),
    (b"GET /x HTTP/1.1\r\n folded: header\r\n\r\n", 400),
    (b"GET /x HTTP/2.0\r\n\r\n", 505),
    (b"GET /x HTTP/1.1\r\nX-Big: " + b"a" * 20_000 + b"\r\n\r\n", 431),
    (b"GET /x HTTP/1.1\r\nX-Big: " + b"a" * 20_000, 431),  # too large before it even ends
])
def test_answered_then_closed(serve: Serve, request_bytes: bytes, status: int) -> None:
    server = serve()
    with connect(server.address) as sock, sock.makefile("rb") as stream:
        sock.sendall(request_bytes)
        answer, headers, _ = read_response(stream)
        assert (answer, headers["connection"]) == (status, "close")
        assert closed_by_peer(sock, 10) < 10


def test_slow_reader_is_dropped_without_delaying_others(serve: Serve) -> None:
    big = b"x" * (64 << 20)

    def large(environ: dict[str, Any], start: Callable[..., Any]) -> Iterable[bytes]:
        if environ["PATH_INFO"] == "/big":
            start("200 OK", [("Content-Length", str(len(big)))])
            return [big]
        return echo(environ, start)

    server = serve(large, write_timeout=1.0)
    with connect(server.address) as slow:
        slow.sendall(b"GET /big HTTP/1.1\r\nHost: x\r\n\r\n")  # and never read
        assert get(server.address, "/small") == 200
        wait_for(lambda: not server._connections, timeout=10, what="the slow reader to be dropped")
        received = 0
        slow.settimeout(10)
        try:
            while data := slow.recv(1 << 20):
                received += len(data)
        except ConnectionResetError:
            pass
        assert received < len(big)


def test_connection_limit_closes_the_oldest_unfinished(serve: Serve) -> None:
    server = serve(max_connections=20)
    threads = threading.active_count()
    waiting = [connect(server.address) for _ in range(40)]
    try:
        for sock in waiting:
            sock.sendall(b"GET / HTTP/1.1\r\n")
        assert get(server.address, "/fine") == 200
        poller = select.poll()
        for sock in waiting:
            poller.register(sock, select.POLLIN)
        closed = {fd for fd, _ in poller.poll(0)}
        assert threading.active_count() == threads
    finally:
        for sock in waiting:
            sock.close()
    assert len(closed) >= 20
    assert waiting[-1].fileno() not in closed  # the newest survive


def test_stop_closes_the_listener(serve: Serve) -> None:
    server = serve()
    assert get(server.address, "/") == 200
    server.stop()
    with pytest.raises(ConnectionRefusedError):
        connect(server.address).close()


# TLS: tests/test_web.py covers TLS, mTLS and basic auth through the real exporter; these cover
# the non-blocking handshake, SAN allow-lists and certificates changed on disk.


def tls_server(serve: Serve, tmp_path: Path, client_auth: dict[str, Any] | None = None,
               **settings: float) -> tuple[HttpServer, Authority, Path]:
    """A server with TLS (and client certificates from the same CA when `client_auth` is
    given); (server, CA, web config path)."""
    ca = Authority(tmp_path, "test-ca")
    cert, key = ca.issue("exporter", server=True, filename="server")
    tls: dict[str, Any] = {"cert_file": str(cert), "key_file": str(key)}
    if client_auth is not None:
        tls.update(client_ca_file=str(ca.path), client_auth_type="RequireAndVerifyClientCert",
                   **client_auth)
    config = tmp_path / "web.yml"
    config.write_text(yaml.safe_dump({"tls_server_config": tls}), encoding="utf-8")
    return serve(web=WebConfigWatcher(str(config)), **settings), ca, config


def client(ca: Authority, cert: tuple[Path, Path] | None = None) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=str(ca.path))
    if cert:
        context.load_cert_chain(*map(str, cert))
    return context


def test_tls_handshakes_do_not_block(serve: Serve, tmp_path: Path) -> None:
    server, ca, _ = tls_server(serve, tmp_path, request_timeout=1.0)
    silent = [connect(server.address) for _ in range(50)]  # TCP, never a ClientHello
    try:
        assert get(server.address, "/", context=client(ca)) == 200
        assert closed_by_peer(silent[0], 10) < 10  # the handshake has a deadline too
    finally:
        for sock in silent:
            sock.close()


def test_tls_keep_alive_and_pipelining(serve: Serve, tmp_path: Path) -> None:
    server, ca, _ = tls_server(serve, tmp_path)
    with client(ca).wrap_socket(connect(server.address), server_hostname="127.0.0.1") as sock, \
            sock.makefile("rb") as stream:
        # Both requests in one TLS record: the second waits in OpenSSL's buffer, where the
        # selector cannot see it.
        sock.sendall(b"GET /1 HTTP/1.1\r\nHost: x\r\n\r\nGET /2 HTTP/1.1\r\nHost: x\r\n\r\n")
        assert read_response(stream)[2] == b"GET /1\n"
        assert read_response(stream)[2] == b"GET /2\n"
        sock.sendall(b"GET /3 HTTP/1.1\r\nHost: x\r\n\r\n")
        assert read_response(stream)[2] == b"GET /3\n"


def test_client_allowed_sans(serve: Serve, tmp_path: Path) -> None:
    server, ca, _ = tls_server(serve, tmp_path, {"client_allowed_sans": ["prometheus"]})
    assert get(server.address, "/", context=client(ca, ca.issue("prometheus", server=False))) == 200
    for cert in (ca.issue("intruder", server=False), None):
        with pytest.raises((OSError, http.client.HTTPException)):
            get(server.address, "/", context=client(ca, cert))


def test_changed_certificate_applies_to_new_connections(serve: Serve, tmp_path: Path) -> None:
    server, ca, _ = tls_server(serve, tmp_path)
    old = client(ca).wrap_socket(connect(server.address), server_hostname="127.0.0.1")

    def served_name() -> str:
        with client(ca).wrap_socket(connect(server.address),
                                    server_hostname="127.0.0.1") as sock:
            der = sock.getpeercert(binary_form=True)
            assert der is not None
            name = x509.load_der_x509_certificate(der).subject
            return str(name.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value)

    assert served_name() == "exporter"
    time.sleep(0.01)  # a new mtime
    ca.issue("renewed", server=True, filename="server")  # over the files the config names
    wait_for(lambda: served_name() == "renewed", what="the renewed certificate")
    with old, old.makefile("rb") as stream:  # an open connection keeps its session
        old.sendall(b"GET /still HTTP/1.1\r\nHost: x\r\n\r\n")
        assert read_response(stream)[2] == b"GET /still\n"


# The front door under hostile requests (issue 19): the four rows of its table, through the
# real exporter at debug level, whose logs must carry no traceback and no raw control byte.

HOSTILE = [
    # A latin-1 digit that str.isdigit() accepts and int() refuses.
    (b"GET /metrics HTTP/1.1\r\nHost: x\r\nContent-Length: \xb2\r\n\r\n", 400),
    # An OpenMetrics version that is not one: answered in the text format.
    (b"GET /metrics HTTP/1.1\r\nHost: x\r\n"
     b"Accept: application/openmetrics-text; version=abc\r\n\r\n", 200),
    (b"GET /metrics HTTP/1.1\r\n\r\n", 400),  # HTTP/1.1 without Host (RFC 9112 3.2)
    (b"GET /metrics HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", 400),  # two Hosts
    (b"GET /metrics\x1b[2J HTTP/1.1\r\nHost: x\r\n\r\n", 400),  # raw ESC in the target
    (b"GET /metrics\r HTTP/1.1\r\nHost: x\r\n\r\n", 400),  # raw CR in the target
    (b"GET /metrics\x00 HTTP/1.1\r\nHost: x\r\n\r\n", 400),  # raw NUL in the target
    (b"GET /metrics HTTP/1.1\r\nHost: x\r\nX-Forged: a\x1bb\r\n\r\n", 400),  # ESC in a value
    (b"BREW /metrics HTTP/1.1\r\nHost: x\r\n\r\n", 501),  # unknown method (RFC 9110 9.1)
    (b"POST /metrics HTTP/1.1\r\nHost: x\r\n\r\n", 405),
    (b"GET /metrics HTTP/1.7\r\nHost: x\r\n\r\n", 505),
    (b"GET /metrics HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip\r\n\r\n", 400),
    (b"GET /metrics HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\n",
     400),
    (b"GET /metrics?name[]=%1b%0d%0a HTTP/1.1\r\nHost: x\r\n\r\n", 200),
    (b"GET /%1b%0d%0aforged HTTP/1.1\r\nHost: x\r\n\r\n", 404),
]


def exchange(address: str, request: bytes) -> bytes:
    """Everything the server answers to `request` (sent, then our side shut)."""
    with connect(address) as sock:
        sock.sendall(request)
        sock.shutdown(socket.SHUT_WR)
        received = b""
        while data := sock.recv(1 << 20):
            received += data
        return received


def test_hostile_requests_get_4xx_and_leave_no_trace(start: Callable[..., ExporterProcess],
                                                     ) -> None:
    exporter = start()
    for request, status in HOSTILE:
        answer = exchange(exporter.address, request)
        assert answer.startswith(f"HTTP/1.1 {status} ".encode()), (request, answer[:200])
    status, _, body = exporter.get("/metrics")
    assert status == 200
    text = body.decode()
    # Refused before the path was read: the first row, Host, the targets, the framing.
    assert 'macie_exporter_http_requests_total{code="400",handler="unparsed"} 8.0' in text
    assert 'macie_exporter_http_requests_total{code="400",handler="/metrics"} 1.0' in text
    assert 'macie_exporter_http_requests_total{code="501",handler="/metrics"} 1.0' in text
    assert 'macie_exporter_http_requests_total{code="404",handler="other"} 1.0' in text
    assert 'macie_exporter_http_connections_dropped_total{reason="malformed"} 11.0' in text
    # The ESC of a target, escaped in the debug line (stderr is read by a thread: wait for it).
    wait_for(lambda: "\\x1b" in exporter.logs(), what="the escaped ESC in the logs")
    logs = exporter.logs()
    assert "Traceback" not in logs and "level=error" not in logs
    assert not re.search("[\x00-\x08\x0b-\x1f\x7f]", logs), "a raw control byte in the logs"


def test_dropped_connections_are_counted_by_reason(serve: Serve) -> None:
    server = serve(request_timeout=0.3, idle_timeout=0.3)
    slow, idle = connect(server.address), connect(server.address)
    with slow, idle, idle.makefile("rb") as stream:
        slow.sendall(b"GET / HTTP/1.1\r\n")
        idle.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        assert read_response(stream)[0] == 200
        closed_by_peer(slow, 10)
        closed_by_peer(idle, 10)
    samples = {(s.name, s.labels.get("reason")): s.value for f in server.stats.collect()
               for s in f.samples}
    assert samples[("macie_exporter_http_connections_dropped_total", "head_timeout")] == 1
    assert samples[("macie_exporter_http_connections_dropped_total", "idle_timeout")] == 1


def test_a_tls_connection_ends_with_close_notify(serve: Serve, tmp_path: Path) -> None:
    server, ca, _ = tls_server(serve, tmp_path)
    raw = connect(server.address)
    sock = client(ca).wrap_socket(raw, server_hostname="127.0.0.1",
                                  suppress_ragged_eofs=False)  # a bare FIN raises SSLEOFError
    with sock, sock.makefile("rb") as stream:
        sock.sendall(b"GET /bye HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        assert read_response(stream)[2] == b"GET /bye\n"
        assert stream.read() == b""  # a clean TLS close


@pytest.mark.parametrize(("host", "clients"), [
    ("", ("127.0.0.1", "::1")), ("::", ("127.0.0.1", "::1")), ("localhost", ()),
    ("127.0.0.1", ("127.0.0.1",)), ("::1", ("::1",)),
])
def test_listen_address_through_getaddrinfo(host: str, clients: tuple[str, ...]) -> None:
    server = HttpServer(host, 0, echo)
    server.start()
    try:
        port = int(server.address.rpartition(":")[2])
        bound = server.address.rpartition(":")[0].strip("[]")
        for address in clients or (bound,):  # a host name: the address it resolved to
            with socket.create_connection((address, port), timeout=10) as sock, \
                    sock.makefile("rb") as stream:
                sock.sendall(b"GET /dual HTTP/1.1\r\nHost: x\r\n\r\n")
                assert read_response(stream)[2] == b"GET /dual\n"
    finally:
        server.stop()


def test_a_refused_head_request_gets_no_body(serve: Serve) -> None:
    server = serve()
    answer = exchange(server.address, b"HEAD / HTTP/2.0\r\nHost: x\r\n\r\n")
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 505 ") and b"Content-Length: " in head
    assert body == b""


def test_several_addresses_are_served_the_same_by_one_server() -> None:
    def where(environ: dict[str, Any], start: Callable[..., Any]) -> Iterable[bytes]:
        body = f"{environ['PATH_INFO']} via {environ['SERVER_NAME']}:{environ['SERVER_PORT']}"
        start("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
        return [body.encode()]

    threads = threading.active_count()
    server = HttpServer("127.0.0.1", 0, where, also=[("::1", 0), ("127.0.0.1", 0)])
    server.start()
    try:
        assert len(server.addresses) == 3 and server.address == server.addresses[0]
        assert server.addresses[1].startswith("[::1]:")
        assert len(set(server.addresses)) == 3
        # One selector thread and one pool of workers, whatever the number of addresses.
        assert threading.active_count() - threads == 1 + len(server._workers)
        for address in server.addresses:
            host, port = endpoint(address)
            with socket.create_connection((host.strip("[]"), port), timeout=10) as sock, \
                    sock.makefile("rb") as stream:
                sock.sendall(b"GET /x HTTP/1.1\r\nHost: x\r\n\r\n")
                body = read_response(stream)[2]
            assert body == f"/x via {host.strip('[]')}:{port}".encode()
    finally:
        server.stop()
    for address in server.addresses:
        host, port = endpoint(address)
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection((host.strip("[]"), port), timeout=2).close()


def test_an_address_that_cannot_be_bound_is_named_and_the_others_are_closed() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            free = probe.getsockname()[1]
        with pytest.raises(ListenError) as caught:
            HttpServer("127.0.0.1", free, echo, also=[("127.0.0.1", port)])
        assert caught.value.address == f"127.0.0.1:{port}"
        assert caught.value.errno == errno.EADDRINUSE
    # The first address was bound, then closed again: it can be bound now.
    with socket.socket() as again:
        again.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        again.bind(("127.0.0.1", free))
