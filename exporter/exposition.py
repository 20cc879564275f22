"""Scrape path: the snapshot's exposition is rendered once per snapshot and served from cache.

Only the small live self-metrics are rendered on every scrape. The bytes are exactly what
prometheus-client's `generate_latest` gives for the snapshot collector followed by the live
collectors, in the format the client negotiated (text or OpenMetrics). For gzip the cached part
is kept as a deflate stream ended by a sync flush, so each scrape only compresses its live tail
and appends it: one valid gzip member, no recompression of the large part.
"""

from __future__ import annotations

import struct
import threading
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from prometheus_client.exposition import choose_encoder, gzip_accepted
from prometheus_client.registry import Collector, CollectorRegistry

from exporter.collect import SnapshotCollector
from exporter.model import Snapshot

_EOF = b"# EOF\n"
# gzip member header: magic, deflate, no flags, mtime 0, no extra flags, OS unknown.
_GZIP_HEADER = b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\xff"
GZIP_LEVEL = 6


@dataclass(frozen=True, slots=True)
class _Compressed:
    prefix: bytes  # gzip header + raw deflate of the cached part, sync-flushed (not final)
    crc: int
    length: int


def _gzip_prefix(data: bytes) -> _Compressed:
    compressor = zlib.compressobj(GZIP_LEVEL, zlib.DEFLATED, -zlib.MAX_WBITS)
    body = compressor.compress(data) + compressor.flush(zlib.Z_SYNC_FLUSH)
    return _Compressed(_GZIP_HEADER + body, zlib.crc32(data), len(data))


def _gzip_finish(cached: _Compressed, tail: bytes) -> bytes:
    compressor = zlib.compressobj(GZIP_LEVEL, zlib.DEFLATED, -zlib.MAX_WBITS)
    body = compressor.compress(tail) + compressor.flush(zlib.Z_FINISH)
    crc = zlib.crc32(tail, cached.crc)
    return b"".join((cached.prefix, body,
                     struct.pack("<II", crc, (cached.length + len(tail)) & 0xFFFFFFFF)))


class CachedExposition:
    """Negotiates the format like prometheus-client and caches the snapshot part per snapshot."""

    def __init__(self, snapshot: Callable[[], Snapshot], tag_keys: Sequence[str],
                 live: Sequence[Collector]) -> None:
        self._snapshot = snapshot
        self._tag_keys = tuple(tag_keys)
        self._live = CollectorRegistry(auto_describe=False)
        for collector in live:
            self._live.register(collector)
        self._lock = threading.Lock()
        self._cached_for: Snapshot | None = None
        self._plain: dict[str, bytes] = {}
        self._compressed: dict[str, _Compressed] = {}

    def _render_snapshot(self, snapshot: Snapshot,
                         encoder: Callable[[CollectorRegistry], bytes]) -> bytes:
        registry = CollectorRegistry(auto_describe=False)
        registry.register(SnapshotCollector(lambda: snapshot, self._tag_keys))
        return encoder(registry).removesuffix(_EOF)

    def render(self, accept: str | None, accept_encoding: str | None,
               ) -> tuple[list[tuple[str, str]], bytes]:
        """(headers, body) for one scrape."""
        encoder, content_type = choose_encoder(accept or "")
        openmetrics = content_type.startswith("application/openmetrics-text")
        live = encoder(self._live).removesuffix(_EOF) + (_EOF if openmetrics else b"")
        headers = [("Content-Type", content_type)]
        if gzip_accepted(accept_encoding or ""):
            headers.append(("Content-Encoding", "gzip"))
            return headers, _gzip_finish(self._cached(content_type, encoder, True), live)
        plain = self._cached(content_type, encoder, False)
        assert isinstance(plain, bytes)
        return headers, plain + live

    def _cached(self, content_type: str, encoder: Callable[[CollectorRegistry], bytes],
                gzip: bool) -> Any:
        """The snapshot part for this format: bytes, or a `_Compressed` when `gzip`."""
        snapshot = self._snapshot()
        with self._lock:
            if snapshot is not self._cached_for:
                self._cached_for, self._plain, self._compressed = snapshot, {}, {}
            store: dict[str, Any] = self._compressed if gzip else self._plain
            if content_type not in store:
                rendered = self._render_snapshot(snapshot, encoder)
                store[content_type] = _gzip_prefix(rendered) if gzip else rendered
            return store[content_type]
