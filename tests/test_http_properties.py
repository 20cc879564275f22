"""Property-based: the HTTP server driven with generated and mutated requests answers each one
it answers with a well-formed response, never a 5xx (but 501 for an unknown method and 505 for
an HTTP version other than 1.0 and 1.1), and no exception escapes into the logs."""

from __future__ import annotations

import logging
import re
import socket
from collections.abc import Iterator

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from benchmarks.http_fuzz import responses
from exporter.aws.counting import ApiRequestCounter
from exporter.engine.selfmetrics import SelfCollector, snapshot_families
from exporter.render.exposition import CachedExposition
from exporter.web.server import HttpServer, make_app
from tests.snapshots import snapshot

KNOWN = {b"GET", b"HEAD", b"POST", b"PUT", b"DELETE", b"CONNECT", b"OPTIONS", b"TRACE",
         b"PATCH"}
# A request line, after the empty lines a server skips before one (RFC 9112 2.2).
REQUEST_LINE = re.compile(rb"(?:^|\n)[\r\n]*([^ \r\n]*) ([^ \r\n]*) HTTP/(\d\.\d)\r?(?=\n|$)")

methods = st.sampled_from([b"GET", b"HEAD", b"POST", b"OPTIONS", b"BREW", b"get", b"G\x00T"])
paths = st.sampled_from([b"/metrics", b"/healthz", b"/readyz", b"/", b"/nope", b"*",
                         b"http://x/metrics", b"/metrics?name[]=macie_exporter_build_info",
                         b"/metrics?name[]=%00&name[]=macie_status", b"/%1b%0d%0a"])
versions = st.sampled_from([b"HTTP/1.1", b"HTTP/1.0", b"HTTP/2.0", b"HTTP/1.7", b"HTTP/x",
                            b"http/1.1", b""])
header_names = st.sampled_from([b"Host", b"Accept", b"Accept-Encoding", b"Content-Length",
                                b"Transfer-Encoding", b"Connection", b"Authorization",
                                b"Expect", b"Upgrade", b"X-Pad", b"Bad Name", b""])
header_values = st.one_of(
    st.sampled_from([b"x", b"gzip", b"close", b"keep-alive", b"chunked", b"5", b"\xb2", b"-1",
                     b"1, 2", b"application/openmetrics-text; version=abc",
                     b"application/openmetrics-text;version=1.0.0;escaping=dots",
                     b"text/plain;version=1.0.0;q=0", b"Basic !!!", b"100-continue",
                     b"h2c"]),
    st.binary(max_size=40))
headers = st.lists(st.tuples(header_names, header_values), max_size=8)
bodies = st.sampled_from([b"", b"hello", b"5\r\nhello\r\n0\r\n\r\n", b"zz\r\n"])


@st.composite
def requests(draw: st.DrawFn) -> bytes:
    line = b" ".join([draw(methods), draw(paths), draw(versions)])
    lines = [line, *(name + b": " + value for name, value in draw(headers))]
    eol = draw(st.sampled_from([b"\r\n", b"\n"]))
    raw = eol.join(lines) + eol + eol + draw(bodies)
    return draw(st.sampled_from([b"", b"\r\n"])) + raw


@st.composite
def mutated(draw: st.DrawFn) -> bytes:
    """A request, then a few byte-level edits: flips, control bytes, cuts, repeats."""
    raw = bytearray(draw(requests()))
    for _ in range(draw(st.integers(0, 4))):
        edit = draw(st.sampled_from(["flip", "insert", "delete", "truncate", "repeat",
                                     "pipeline"]))
        at = draw(st.integers(0, max(0, len(raw) - 1)))
        if edit == "flip" and raw:
            raw[at] = draw(st.integers(0, 255))
        elif edit == "insert":
            raw[at:at] = draw(st.sampled_from([b"\x00", b"\x1b", b"\r", b"\n", b"\x7f",
                                               b"\xff", b" ", b":", b"\r\n\r\n"]))
        elif edit == "delete":
            del raw[at:at + draw(st.integers(1, 8))]
        elif edit == "truncate":
            del raw[at:]
        elif edit == "repeat":
            raw[at:at] = raw[at:at + 40] * draw(st.integers(2, 500))
        elif edit == "pipeline":
            raw += draw(requests())
    return bytes(raw)


class Errors(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@pytest.fixture(scope="module")
def server() -> Iterator[HttpServer]:
    """The exporter's own app over a small snapshot, on 127.0.0.1."""
    held = snapshot()
    live = SelfCollector(ApiRequestCounter(), build=("0.0.0", "3.11.0", "1.0.0"))
    exposition = CachedExposition(lambda: held, snapshot_families(), [live])
    http = HttpServer("127.0.0.1", 0, make_app("/metrics", exposition))
    http.request_timeout = 2.0
    http.start()
    yield http
    http.stop()


def exchange(address: str, raw: bytes) -> bytes:
    host, _, port = address.rpartition(":")
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(raw)
        sock.shutdown(socket.SHUT_WR)
        received = b""
        while data := sock.recv(1 << 20):
            received += data
        return received


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(raw=st.one_of(requests(), mutated()))
def test_every_answer_is_well_formed_and_never_a_5xx(server: HttpServer, raw: bytes) -> None:
    errors = Errors()
    logging.getLogger("exporter").addHandler(errors)
    try:
        received = exchange(server.address, raw)
    finally:
        logging.getLogger("exporter").removeHandler(errors)
    lines = REQUEST_LINE.findall(raw)  # pipelined requests have several
    answers = responses(received)
    assert answers is not None, f"an answer that does not parse: {received[:300]!r}"
    for code in answers:
        if code == 505:
            assert any(version not in (b"1.0", b"1.1") for _, _, version in lines), raw[:200]
        elif code == 501:
            assert any(method not in KNOWN for method, _, _ in lines), raw[:200]
        elif code == 503:  # not bad input: /readyz while the snapshot has a target to refresh
            assert any(target == b"/readyz" for _, target, _ in lines), raw[:200]
        else:
            assert 200 <= code < 500, (code, raw[:200])
    assert not errors.records, [r.getMessage() for r in errors.records]
