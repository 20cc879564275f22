"""Scrape path: the snapshot's exposition is rendered once per snapshot and served from cache.

Only the live self-metrics are rendered on every scrape. The bytes are exactly what
prometheus-client's `generate_latest` gives for the snapshot collector followed by the live
collectors, in the format the client negotiated (text or OpenMetrics).

Each family is rendered target by target (`render.families.FamilySpec`): a target's encoded
samples are kept per format (`Fragments`) for as long as its part of the family's inputs stays
equal, so a render after a round of refreshes encodes only what changed, and the others' bytes
are reused.
The request counts of the live self-metrics are kept the same way between scrapes. Changed
targets are encoded together, a batch of at most `JOBS_PER_SLICE` jobs at a time; a target with
more jobs than that is encoded a slice at a time and not kept (with 10,000 jobs, memory stays
bounded, and some of them change in nearly every refresh anyway). The snapshot part is streamed
into a deflate compressor. The cached stream ends
with a sync flush, so each scrape compresses just its live tail and appends it: one valid gzip
member. A client that does not accept gzip gets the cached part inflated.
"""

from __future__ import annotations

import logging
import struct
import threading
import time
import zlib
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

from prometheus_client.exposition import choose_encoder, gzip_accepted
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector, CollectorRegistry

from exporter.model import Snapshot, TargetKey
from exporter.render.families import AnySpec

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


@runtime_checkable
class LiveFamilies(Protocol):
    """Live self-metrics whose request counts are kept per target between scrapes."""

    requests: AnySpec

    def collect_rest(self) -> Iterable[Metric]: ...


class _Rest(Collector):
    """The self-metrics but the request counts."""

    def __init__(self, collector: LiveFamilies) -> None:
        self._collector = collector

    def collect(self) -> Iterable[Metric]:
        return self._collector.collect_rest()


_NO_SNAPSHOT = Snapshot()  # the live families' parts do not come from a snapshot


def _encode(encoder: Encoder, family: Metric) -> bytes:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Family(family))
    return encoder(registry).removesuffix(_EOF)


def _samples_of(text: bytes, header: bytes, samples: int) -> bytes:
    """The sample lines of one encoded family: what follows its header, one line per sample
    (a line ends at b"\n" only: label values escape it)."""
    if not text.startswith(header):
        raise RuntimeError("an encoded family does not start with its header")
    body = text[len(header):]
    lines = body.count(b"\n")
    if lines != samples:
        raise RuntimeError(f"{samples} samples encoded as {lines} lines")
    return body


class Fragments:
    """Rendered samples per family and target, for one format, kept while the target's part of
    the family (`FamilySpec.parts`) stays equal. A render re-encodes only the targets whose
    part changed; the others' bytes are reused as they are."""

    def __init__(self) -> None:
        self.lock = threading.Lock()  # one render per format at a time
        self._families: tuple[AnySpec, ...] | None = None
        self._headers: dict[int, bytes] = {}
        self._kept: dict[int, dict[TargetKey, tuple[Any, bytes]]] = {}

    def families(self, families: Sequence[AnySpec]) -> Sequence[AnySpec]:
        """`families`, the ones to render (what is kept is dropped if they are not the last
        render's: the samples kept belong to those)."""
        if self._families is None or tuple(families) != self._families:
            self._families = tuple(families)
            self._headers.clear()
            self._kept.clear()
        return families

    def family(self, index: int, spec: AnySpec, snapshot: Snapshot, encoder: Encoder,
               units_per_batch: int) -> Iterator[bytes]:
        """The family's header and every target's samples, in snapshot order.

        A target whose part is bigger than a batch (more jobs than `units_per_batch`) is
        encoded a slice at a time, streamed and not kept: its bytes are large, and with that
        many jobs some change in nearly every refresh.
        """
        header = self._headers.get(index)
        if header is None:
            header = self._headers[index] = _encode(encoder, spec.make())
        yield header
        kept = self._kept.get(index, {})
        fresh: dict[TargetKey, tuple[Any, bytes]] = {}
        batch = _Batch(spec, header, encoder)
        queue: list[bytes | tuple[TargetKey, Any]] = []  # in order, behind the batch

        def drain() -> Iterator[bytes]:
            encoded = batch.flush()
            for item in queue:
                if isinstance(item, bytes):
                    yield item
                else:
                    key, part = item
                    fresh[key] = (part, encoded[key])
                    yield encoded[key]
            queue.clear()

        for key, part in spec.parts(snapshot):
            hit = kept.get(key)
            if hit is not None and (hit[0] is part or hit[0] == part):
                fresh[key] = hit
                if queue:
                    queue.append(hit[1])
                else:
                    yield hit[1]
                continue
            size = spec.size(part)
            if size > units_per_batch:
                yield from drain()
                slices = []
                for lo in range(0, size, units_per_batch):
                    family = spec.make()
                    spec.add(family, key, part, lo, min(lo + units_per_batch, size))
                    encoded = _samples_of(_encode(encoder, family), header, len(family.samples))
                    if spec.keep_large:
                        slices.append(encoded)
                    else:
                        yield encoded
                if spec.keep_large:  # parts that change rarely: kept whole like small ones
                    fresh[key] = (part, b"".join(slices))
                    yield fresh[key][1]
                continue
            batch.add(key, part, size)
            queue.append((key, part))
            if batch.units >= units_per_batch:
                yield from drain()
        yield from drain()
        self._kept[index] = fresh  # targets gone from the snapshot are dropped


class _Batch:
    """Small parts of one family encoded together, then split back per target by their
    sample counts (one line per sample)."""

    def __init__(self, spec: AnySpec, header: bytes, encoder: Encoder) -> None:
        self._spec, self._header, self._encoder = spec, header, encoder
        self._family = spec.make()
        self._marks: list[tuple[TargetKey, int, int]] = []
        self.units = 0

    def add(self, key: TargetKey, part: object, size: int) -> None:
        first = len(self._family.samples)
        self._spec.add(self._family, key, part, 0, size)
        self._marks.append((key, first, len(self._family.samples)))
        self.units += max(1, size)

    def flush(self) -> dict[TargetKey, bytes]:
        if not self._marks:
            return {}
        family, marks = self._family, self._marks
        self._family, self._marks, self.units = self._spec.make(), [], 0
        body = _samples_of(_encode(self._encoder, family), self._header, len(family.samples))
        if len(marks) == 1:
            return {marks[0][0]: body}
        lines = body.split(b"\n")
        return {key: b"\n".join(lines[first:last]) + b"\n" if last > first else b""
                for key, first, last in marks}


def render_snapshot(snapshot: Snapshot, families: Sequence[AnySpec], encoder: Encoder,
                    fragments: Fragments | None = None,
                    jobs_per_slice: int = JOBS_PER_SLICE) -> Iterator[bytes]:
    """The snapshot part of the exposition (no `# EOF`), in pieces; with `fragments`, the
    samples of targets unchanged since the last render in that format are reused. Consume it
    whole: it holds `fragments`' lock until it ends."""
    fragments = fragments or Fragments()
    with fragments.lock:
        for index, spec in enumerate(fragments.families(families)):
            yield from fragments.family(index, spec, snapshot, encoder, jobs_per_slice)


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


Render = Callable[[Snapshot, Sequence[AnySpec], Encoder, Fragments], Iterable[bytes]]


class CachedExposition:
    """Negotiates the format like prometheus-client and caches the snapshot part per snapshot.

    Without `start()` the first scrape after a snapshot change renders it (tests, benchmarks).
    After `start()` a background thread renders each new snapshot, in every format asked for in
    the last `FORMAT_TTL` seconds, and publishes them together: scrapes serve the last published
    snapshot and never wait for the background render. Swaps during a render are coalesced, and
    after a render the thread rests as long as the render used the CPU, so that targets
    swapping snapshots in turn keep it to half a core at most. A snapshot that makes the
    exporter ready is rendered without waiting for the swaps to pause.

    A scrape renders by itself only a format not asked for in `FORMAT_TTL` (at most
    `MAX_FORMATS` are remembered; the Accept header chooses the format, so any further ones are
    rendered on every scrape and never kept), and, after a failed background render, every
    snapshot until a render succeeds: a render that keeps failing fails the scrapes, never
    serves stale data in silence.
    """

    FORMAT_TTL = 900.0
    MAX_FORMATS = 4

    def __init__(self, snapshot: Callable[[], Snapshot], families: Sequence[AnySpec],
                 live: Sequence[Collector | LiveFamilies], *, render: Render = render_snapshot,
                 clock: Callable[[], float] = time.monotonic,
                 render_clock: Callable[[], float] = time.thread_time,
                 rest: Callable[[float], object] | None = None,
                 settle: float = 0.0, max_delay: float = 10.0,
                 published: Callable[[Snapshot | None], object] | None = None) -> None:
        self._snapshot = snapshot
        # Before rendering, wait until swaps pause for `settle` seconds (at most `max_delay`):
        # a burst of targets refreshing one after another is rendered once or twice, not once
        # per rest period.
        self._settle = settle
        self._max_delay = max_delay
        # Told each snapshot the background renderer has published (even when its render
        # failed: scrapes render it themselves then), and None once it stops.
        self._on_published = published
        self._families = tuple(families)
        # The live collectors in order, each as the families whose samples are kept per target
        # between scrapes (the request counts) and a registry of the rest.
        self._live: list[tuple[tuple[AnySpec, ...], CollectorRegistry]] = []
        for collector in live:
            registry = CollectorRegistry(auto_describe=False)
            if isinstance(collector, LiveFamilies):
                registry.register(_Rest(collector))
                self._live.append(((collector.requests,), registry))
            else:
                registry.register(collector)
                self._live.append(((), registry))
        self._live_fragments: dict[str, Fragments] = {}  # per content type asked for
        self._render = render
        self._clock = clock
        # The renderer's own CPU time: it rests as long as its render used the CPU (waiting for
        # the GIL behind busy call workers is not counted, or a slow render would rest long).
        self._render_clock = render_clock
        self._publish_lock = threading.Lock()  # one publish at a time
        self._scrape_lock = threading.Lock()  # renders on the scrape path, one at a time
        self._published = _Published(snapshot(), {})
        self._asked_lock = threading.Lock()
        self._asked: dict[str, tuple[Encoder, float]] = {}  # content type -> encoder, last ask
        self._fragments: dict[str, Fragments] = {}  # per content type asked for
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
        if self._on_published is not None:
            self._on_published(None)

    def snapshot_changed(self) -> None:
        """Called by the snapshot store after each swap; wakes the background renderer."""
        self._changed.set()

    def render(self, accept: str | None, accept_encoding: str | None,
               ) -> tuple[list[tuple[str, str]], bytes]:
        """(headers, body) for one scrape."""
        encoder, content_type = choose_encoder(accept or "")
        openmetrics = content_type.startswith("application/openmetrics-text")
        cached = self._cached(content_type, encoder)
        live = self._render_live(content_type, encoder) + (_EOF if openmetrics else b"")
        headers = [("Content-Type", content_type)]
        if gzip_accepted(accept_encoding or ""):
            headers.append(("Content-Encoding", "gzip"))
            return headers, _gzip_finish(cached, live)
        return headers, cached.inflate() + live

    def _render_live(self, content_type: str, encoder: Encoder) -> bytes:
        """The live self-metrics; the request counts of targets not called since the last
        scrape in this format are not encoded again."""
        with self._asked_lock:
            fragments = (self._live_fragments.setdefault(content_type, Fragments())
                         if content_type in self._asked else Fragments())
        pieces: list[bytes] = []
        with fragments.lock:
            index = 0
            for kept, rest in self._live:
                for spec in kept:
                    pieces += fragments.family(index, spec, _NO_SNAPSHOT, encoder,
                                               JOBS_PER_SLICE)
                    index += 1
                pieces.append(encoder(rest).removesuffix(_EOF))
        return b"".join(pieces)

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
                cached = self._compress(published.snapshot, encoder,
                                        content_type if remembered else None)
                if remembered:
                    published.formats[content_type] = cached
            return cached

    def _compress(self, snapshot: Snapshot, encoder: Encoder,
                  content_type: str | None) -> _Compressed:
        """Render and compress; the samples rendered are kept per `content_type` (None: a
        format not remembered, rendered from scratch)."""
        if content_type is None:
            fragments = Fragments()
        else:
            with self._asked_lock:
                fragments = self._fragments.setdefault(content_type, Fragments())
        return _compress(self._render(snapshot, self._families, encoder, fragments))

    def _publish(self, snapshot: Snapshot) -> None:
        with self._publish_lock:
            if snapshot is self._published.snapshot:
                return
            now = self._clock()
            with self._asked_lock:
                for content_type in [c for c, (_, asked) in self._asked.items()
                                     if now - asked > self.FORMAT_TTL]:
                    del self._asked[content_type]
                    self._fragments.pop(content_type, None)
                    self._live_fragments.pop(content_type, None)
                wanted = list(self._asked.items())
            formats = {content_type: self._compress(snapshot, encoder, content_type)
                       for content_type, (encoder, _) in wanted}
            self._published = _Published(snapshot, formats)
            self._failed = False

    def _settled(self) -> bool:
        """Wait for a pause in the swaps; False when stopping. A snapshot that makes the
        exporter ready (every target's first refresh done) is rendered without waiting: the
        collectors' swaps that follow it would otherwise hold /readyz back."""
        began = time.monotonic()
        while self._settle > 0 and time.monotonic() - began < self._max_delay:
            if self._snapshot().ready and not self._published.snapshot.ready:
                break
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
            began = self._render_clock()
            snapshot = self._snapshot()
            try:
                self._publish(snapshot)
            except Exception:
                self._failed = True
                log.exception("rendering the exposition failed; scrapes render it themselves "
                              "until a render succeeds")
            if self._on_published is not None:
                self._on_published(snapshot)
            self._rest(self._render_clock() - began)
