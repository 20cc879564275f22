"""The HTTP server's own numbers: requests answered and connections dropped, so that an
operator sees an attack (a live collector, read at every scrape)."""

from __future__ import annotations

import threading
from collections.abc import Iterable, Iterator
from typing import Final

from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector

from exporter.render.families import CounterFamily

# Why the server closed a connection it had not finished with.
HEAD_TIMEOUT: Final = "head_timeout"  # the TLS handshake or request head took too long
IDLE_TIMEOUT: Final = "idle_timeout"  # no next request on a keep-alive connection
WRITE_TIMEOUT: Final = "write_timeout"  # the response was not read in time
CONNECTION_LIMIT: Final = "connection_limit"  # closed to make room for a new connection
MALFORMED: Final = "malformed"  # answered 4xx for a request it could not parse, then closed
TLS_HANDSHAKE: Final = "tls_handshake"  # the handshake failed or the client's SAN is not allowed
REASONS = (HEAD_TIMEOUT, IDLE_TIMEOUT, WRITE_TIMEOUT, CONNECTION_LIMIT, MALFORMED,
           TLS_HANDSHAKE)
OTHER = "other"  # the handler label of any path the exporter does not serve
UNPARSED = "unparsed"  # the handler label of a request refused before its path was read


class HttpStats(Collector):
    """`macie_exporter_http_requests_total{handler, code}` and
    `macie_exporter_http_connections_dropped_total{reason}`. Handlers are the exporter's own
    paths, `other` and `unparsed`, and codes the ones the server answers: a bounded set."""

    def __init__(self, paths: Iterable[str]) -> None:
        self.paths = frozenset(paths)
        self._lock = threading.Lock()
        self._requests: dict[tuple[str, str], int] = {}
        self._dropped = dict.fromkeys(REASONS, 0)

    def handler(self, path: str | None) -> str:
        if path is None:
            return UNPARSED
        return path if path in self.paths else OTHER

    def answered(self, path: str | None, code: int) -> None:
        key = (self.handler(path), str(code))
        with self._lock:
            self._requests[key] = self._requests.get(key, 0) + 1

    def dropped(self, reason: str) -> None:
        with self._lock:
            self._dropped[reason] += 1

    def describe(self) -> Iterable[Metric]:
        return []

    def collect(self) -> Iterator[Metric]:
        with self._lock:
            requests = sorted(self._requests.items())
            dropped = list(self._dropped.items())
        answered = CounterFamily(
            "macie_exporter_http_requests",
            "HTTP requests the exporter answered, by handler (the exporter's path, other or "
            "unparsed) and status code.", labels=["handler", "code"])
        for (handler, code), count in requests:
            answered.add_metric([handler, code], count)
        yield answered
        closed = CounterFamily(
            "macie_exporter_http_connections_dropped",
            "Connections the exporter's HTTP server closed before their exchange ended, by "
            "reason (head_timeout, idle_timeout, write_timeout, connection_limit, malformed, "
            "tls_handshake).", labels=["reason"])
        for reason, count in dropped:
            closed.add_metric([reason], count)
        yield closed
