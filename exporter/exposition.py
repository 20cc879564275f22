"""Scrape path: the snapshot's exposition is rendered once per snapshot and served from cache.

Only the small live self-metrics are rendered on every scrape. The bytes are exactly what
prometheus-client's `generate_latest` gives for the snapshot collector followed by the live
collectors, in the format the client negotiated (text or OpenMetrics).

Memory stays bounded at any job count: the snapshot part is rendered family by family and, for
the large per-job families, a slice of jobs at a time (the header lines of later slices are
dropped), and streamed into a deflate compressor; only the compressed bytes are kept. The cached
stream ends with a sync flush, so each scrape compresses just its live tail and appends it: one
valid gzip member. A client that does not accept gzip gets the cached part inflated.
"""

from __future__ import annotations

import logging
import struct
import threading
import time
import zlib
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass

from prometheus_client.exposition import choose_encoder, gzip_accepted
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector, CollectorRegistry

from exporter.collect import SnapshotCollector, job_rows
from exporter.model import Snapshot

log = logging.getLogger(__name__)
_EOF = b"# EOF\n"
# gzip member header: magic, deflate, no flags, mtime 0, no extra flags, OS unknown.
_GZIP_HEADER = b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\xff"
GZIP_LEVEL = 6
JOBS_PER_SLICE = 500
Encoder = Callable[[CollectorRegistry], bytes]


@dataclass(frozen=True, slots=True)
class _Compressed:
    prefix: bytes  # gzip header + raw deflate of the cached part, sync-flushed (not final)
    crc: int
    length: int

    def inflate(self) -> bytes:
        return zlib.decompressobj(-zlib.MAX_WBITS).decompress(self.prefix[len(_GZIP_HEADER):])


class _Family(Collector):
    def __init__(self, family: Metric) -> None:
        self._family = family

    def collect(self) -> Iterable[Metric]:
        return [self._family]


def _encode(encoder: Encoder, family: Metric) -> bytes:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Family(family))
    return encoder(registry).removesuffix(_EOF)


def _without_headers(text: bytes) -> bytes:
    """A later slice of a family: its samples only (sample lines never start with '#')."""
    return b"".join(line for line in text.splitlines(keepends=True)
                    if not line.startswith(b"#"))


def render_snapshot(snapshot: Snapshot, tag_keys: Sequence[str], encoder: Encoder,
                    jobs_per_slice: int = JOBS_PER_SLICE) -> Iterator[bytes]:
    """The snapshot part of the exposition (no `# EOF`), in pieces of bounded size."""
    collector = SnapshotCollector(lambda: snapshot, tag_keys)
    rows = job_rows(snapshot)
    for build in collector.job_family_builders():
        for start in range(0, max(1, len(rows)), jobs_per_slice):
            text = _encode(encoder, build(rows[start:start + jobs_per_slice]))
            yield _without_headers(text) if start else text
    for family in collector.summary_families(snapshot):
        yield _encode(encoder, family)


def _compress(pieces: Iterable[bytes]) -> _Compressed:
    compressor = zlib.compressobj(GZIP_LEVEL, zlib.DEFLATED, -zlib.MAX_WBITS)
    out, crc, length = [_GZIP_HEADER], 0, 0
    for piece in pieces:
        out.append(compressor.compress(piece))
        crc = zlib.crc32(piece, crc)
        length += len(piece)
    out.append(compressor.flush(zlib.Z_SYNC_FLUSH))
    return _Compressed(b"".join(out), crc, length)


def _gzip_finish(cached: _Compressed, tail: bytes) -> bytes:
    compressor = zlib.compressobj(GZIP_LEVEL, zlib.DEFLATED, -zlib.MAX_WBITS)
    body = compressor.compress(tail) + compressor.flush(zlib.Z_FINISH)
    crc = zlib.crc32(tail, cached.crc)
    return b"".join((cached.prefix, body,
                     struct.pack("<II", crc, (cached.length + len(tail)) & 0xFFFFFFFF)))


@dataclass(frozen=True, slots=True)
class _Published:
    """One snapshot and its cached part, per content type (a format rendered on the scrape path
    is added under the scrape lock)."""
    snapshot: Snapshot
    formats: dict[str, _Compressed]


Render = Callable[[Snapshot, Sequence[str], Encoder], Iterable[bytes]]


class CachedExposition:
    """Negotiates the format like prometheus-client and caches the snapshot part per snapshot.

    Without `start()` the first scrape after a snapshot change renders it (tests, benchmarks).
    After `start()` a background thread renders each new snapshot, in every format asked for in
    the last `FORMAT_TTL` seconds, and publishes them together: scrapes serve the last published
    snapshot and never wait for the background render. Swaps during a render are coalesced, and
    after a render the thread rests as long as the render took, so that targets swapping
    snapshots in turn keep it to half a core at most.

    A scrape renders by itself only a format not asked for in `FORMAT_TTL` (at most
    `MAX_FORMATS` are remembered; the Accept header chooses the format, so any further ones are
    rendered on every scrape and never kept), and, after a failed background render, every
    snapshot until a render succeeds: a render that keeps failing fails the scrapes, never
    serves stale data in silence.
    """

    FORMAT_TTL = 900.0
    MAX_FORMATS = 4

    def __init__(self, snapshot: Callable[[], Snapshot], tag_keys: Sequence[str],
                 live: Sequence[Collector], *, render: Render = render_snapshot,
                 clock: Callable[[], float] = time.monotonic,
                 rest: Callable[[float], object] | None = None,
                 settle: float = 0.0, max_delay: float = 10.0) -> None:
        self._snapshot = snapshot
        # Before rendering, wait until swaps pause for `settle` seconds (at most `max_delay`):
        # a burst of targets refreshing one after another is rendered once or twice, not once
        # per rest period.
        self._settle = settle
        self._max_delay = max_delay
        self._tag_keys = tuple(tag_keys)
        self._live = CollectorRegistry(auto_describe=False)
        for collector in live:
            self._live.register(collector)
        self._render = render
        self._clock = clock
        self._publish_lock = threading.Lock()  # one publish at a time
        self._scrape_lock = threading.Lock()  # renders on the scrape path, one at a time
        self._published = _Published(snapshot(), {})
        self._asked_lock = threading.Lock()
        self._asked: dict[str, tuple[Encoder, float]] = {}  # content type -> encoder, last ask
        self._failed = False
        self._changed = threading.Event()
        self._stopping = threading.Event()
        self._rest = rest or self._stopping.wait
        self._thread: threading.Thread | None = None

    def _background(self) -> bool:
        return self._thread is not None and not self._failed

    def served(self) -> Snapshot:
        """The snapshot /metrics serves now."""
        return self._published.snapshot if self._background() else self._snapshot()

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="exposition-render", daemon=True)
        self._thread.start()
        self._changed.set()

    def stop(self) -> None:
        self._stopping.set()
        self._changed.set()
        if self._thread is not None:
            self._thread.join(timeout=2)  # a render in flight is not waited for

    def snapshot_changed(self) -> None:
        """Called by the snapshot store after each swap; wakes the background renderer."""
        self._changed.set()

    def render(self, accept: str | None, accept_encoding: str | None,
               ) -> tuple[list[tuple[str, str]], bytes]:
        """(headers, body) for one scrape."""
        encoder, content_type = choose_encoder(accept or "")
        openmetrics = content_type.startswith("application/openmetrics-text")
        live = encoder(self._live).removesuffix(_EOF) + (_EOF if openmetrics else b"")
        cached = self._cached(content_type, encoder)
        headers = [("Content-Type", content_type)]
        if gzip_accepted(accept_encoding or ""):
            headers.append(("Content-Encoding", "gzip"))
            return headers, _gzip_finish(cached, live)
        return headers, cached.inflate() + live

    def _remember(self, content_type: str, encoder: Encoder) -> bool:
        with self._asked_lock:
            if content_type in self._asked or len(self._asked) < self.MAX_FORMATS:
                self._asked[content_type] = (encoder, self._clock())
                return True
            return False

    def _cached(self, content_type: str, encoder: Encoder) -> _Compressed:
        remembered = self._remember(content_type, encoder)
        if not self._background():
            self._publish(self._snapshot())
        published = self._published
        cached = published.formats.get(content_type)
        if cached is not None:
            return cached
        with self._scrape_lock:  # a format not rendered yet: not behind the background render
            cached = published.formats.get(content_type)
            if cached is None:
                cached = self._compress(published.snapshot, encoder)
                if remembered:
                    published.formats[content_type] = cached
            return cached

    def _compress(self, snapshot: Snapshot, encoder: Encoder) -> _Compressed:
        return _compress(self._render(snapshot, self._tag_keys, encoder))

    def _publish(self, snapshot: Snapshot) -> None:
        with self._publish_lock:
            if snapshot is self._published.snapshot:
                return
            now = self._clock()
            with self._asked_lock:
                for content_type in [c for c, (_, asked) in self._asked.items()
                                     if now - asked > self.FORMAT_TTL]:
                    del self._asked[content_type]
                wanted = list(self._asked.items())
            formats = {content_type: self._compress(snapshot, encoder)
                       for content_type, (encoder, _) in wanted}
            self._published = _Published(snapshot, formats)
            self._failed = False

    def _settled(self) -> bool:
        """Wait for a pause in the swaps; False when stopping."""
        began = time.monotonic()
        while self._settle > 0 and time.monotonic() - began < self._max_delay:
            if not self._changed.wait(self._settle):
                break
            self._changed.clear()
            if self._stopping.is_set():
                return False
        return not self._stopping.is_set()

    def _run(self) -> None:
        while True:
            self._changed.wait()
            self._changed.clear()  # swaps during the render wake the next pass: coalesced
            if self._stopping.is_set() or not self._settled():
                return
            began = self._clock()
            try:
                self._publish(self._snapshot())
            except Exception:
                self._failed = True
                log.exception("rendering the exposition failed; scrapes render it themselves "
                              "until a render succeeds")
            self._rest(self._clock() - began)
