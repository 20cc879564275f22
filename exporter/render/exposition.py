"""Scrape path: the snapshot's exposition is rendered once per snapshot and served from cache.

Only the live self-metrics are rendered on every scrape. The bytes are exactly what
prometheus-client's `generate_latest` gives for the snapshot collector followed by the live
collectors, in the format the client negotiated (text or OpenMetrics), and for a `name[]`
filter what its restricted registry gives.

Each family is rendered target by target (`render.families.FamilySpec`): a target's encoded
samples are kept for as long as its part of the family's inputs stays equal, so a render after
a round of refreshes encodes only what changed, and the others' bytes are reused. Sample lines
are the same bytes in both formats, so they are encoded once for both. What is kept is
compressed (`Segments`): `TARGETS_PER_CHUNK` targets' samples to a chunk, each chunk a
compressed segment of its own, and a render compresses again only the chunks holding a target
that changed (at 10,200 targets the text is 115 MB, its compressed chunks about 4 MB). Changed
targets are encoded together, a batch of at most `JOBS_PER_SLICE` jobs at a time; a target with
more jobs than that is encoded a slice at a time and not kept (with 10,000 jobs, memory stays
bounded, and some of them change in nearly every refresh anyway). The request counts of the
live self-metrics are kept between scrapes, uncompressed (`Fragments`).

Each segment ends with a sync flush, so segments in any order, concatenated, are one deflate
stream: a family's samples are its chunks joined, and each format's HELP and TYPE lines are
segments too. A scrape joins the segments it wants (all of them, or the families a `name[]`
filter names), compresses just its live tail and appends it: one valid gzip member. A client
that does not accept gzip gets the segments inflated a piece at a time as the answer is sent
(`CachedExposition.stream`). No Accept header and no filter costs a render.
"""

from __future__ import annotations

import bisect
import itertools
import logging
import operator
import re
import struct
import threading
import time
import zlib
from array import array
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any, Protocol, cast, runtime_checkable

from prometheus_client.exposition import generate_latest, gzip_accepted
from prometheus_client.metrics_core import Metric
from prometheus_client.openmetrics.exposition import generate_latest as generate_openmetrics
from prometheus_client.registry import Collector, CollectorRegistry
from prometheus_client.utils import floatToGoString

from exporter.model import Snapshot, TargetKey, TargetResult, changed_places
from exporter.render.families import AnySpec, Family, one_unit

log = logging.getLogger(__name__)
_EOF = b"# EOF\n"
# gzip member header: magic, deflate, no flags, mtime 0, no extra flags, OS unknown.
_GZIP_HEADER = b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\xff"
GZIP_LEVEL = 6
JOBS_PER_SLICE = 500
Encoder = Callable[[CollectorRegistry], bytes]
# What _sample_lines writes itself: legacy names (a label name not reserved: no leading "__").
_LEGACY_NAME = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*")
_LEGACY_LABEL = re.compile(r"(?!__)[a-zA-Z_][a-zA-Z0-9_]*")
_go_float: Callable[[float], str] = floatToGoString  # prometheus-client's value format


@dataclass(frozen=True, slots=True)
class _Compressed:
    # The gzip header, then the raw deflate of the cached part, sync-flushed (not final), in
    # the pieces the chunks keep: joined only when a scrape sends them.
    pieces: tuple[bytes, ...]
    crc: int
    length: int

    def inflate(self) -> bytes:
        return _inflate(self.pieces[1:])


class _Family(Collector):
    def __init__(self, *families: Metric) -> None:
        self._families = families

    def collect(self) -> Iterable[Metric]:
        return self._families


def _restricted(registry: CollectorRegistry, names: frozenset[str]) -> CollectorRegistry:
    """`registry` with prometheus-client's `name[]` filter applied: the families with a
    sample of one of `names`, with those samples only."""
    kept = []
    for family in registry.collect():
        samples = [sample for sample in family.samples if sample.name in names]
        if samples:
            restricted = Metric(family.name, family.documentation, family.type)
            restricted.samples = samples
            kept.append(restricted)
    out = CollectorRegistry(auto_describe=False)
    out.register(_Family(*kept))
    return out


@runtime_checkable
class LiveFamilies(Protocol):
    """Live self-metrics whose request counts are kept per target between scrapes (None: the
    request counts are filtered out)."""

    requests: AnySpec | None

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


def _escaped(value: str) -> str:
    """A label value as prometheus-client escapes it (backslash, newline, double quote)."""
    if "\\" in value or "\n" in value or '"' in value:
        return value.replace("\\", r"\\").replace("\n", r"\n").replace('"', r'\"')
    return value


def _sample_lines(family: Metric) -> bytes | None:
    """The family's sample lines, byte for byte what `generate_latest` (the text format, its
    default escaping) writes after the HELP and TYPE lines, or None for a family this does not
    write: a name that is not a legacy name, a sample with a timestamp or an exemplar, or one
    that format writes apart (`_created`, `_gsum`, `_gcount`). Written here, not by
    `generate_latest`, because a family made of a few changed targets' samples cost 10-20 us a
    sample there (a registry, a collect and a name check per label per sample) against 2.4 us.
    `FamilySpec` admits legacy names only, so this is every family the caches encode."""
    names = getattr(family, "_labelnames", ())
    if not _LEGACY_NAME.fullmatch(family.name) or not all(
            _LEGACY_LABEL.fullmatch(label) for label in names):
        return None
    own = {family.name, f"{family.name}_total"}
    out = []
    for sample in family.samples:
        if (sample.name not in own or sample.timestamp is not None
                or sample.exemplar is not None or sample.native_histogram is not None):
            return None
        labels = sample.labels
        if labels:
            if not all(label in names for label in labels):
                return None
            text = ",".join([f'{label}="{_escaped(value)}"'
                             for label, value in sorted(labels.items())])
            out.append(f"{sample.name}{{{text}}} {_go_float(sample.value)}\n")
        else:
            out.append(f"{sample.name} {_go_float(sample.value)}\n")
    return "".join(out).encode()


def _body(encoder: Encoder, family: Metric, header: bytes) -> bytes:
    """The family's sample lines as `encoder` writes them (after `header`)."""
    if encoder is generate_latest:
        lines = _sample_lines(family)
        if lines is not None:
            return lines
    return _samples_of(_encode(encoder, family), header, len(family.samples))


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


class _Kept:
    """What a renderer keeps between renders of the same families, one render at a time."""

    def __init__(self) -> None:
        self.lock = threading.Lock()  # one render at a time
        self._families: tuple[AnySpec, ...] | None = None
        self._headers: dict[int, bytes] = {}
        self._writers: dict[int, _Lines] = {}  # id(spec) -> its writer

    def families(self, families: Sequence[AnySpec]) -> Sequence[AnySpec]:
        """`families`, the ones to render (what is kept is dropped if they are not the last
        render's: the samples kept belong to those)."""
        if self._families is None or tuple(families) != self._families:
            self._families = tuple(families)
            self._headers.clear()
            self._writers.clear()
            self._forget()
        return families

    def writer(self, spec: AnySpec) -> _Lines:
        """The family's sample-line writer, kept while the families stay the same."""
        writer = self._writers.get(id(spec))
        if writer is None or writer.spec is not spec:
            writer = self._writers[id(spec)] = _Lines(spec)
        return writer

    def _forget(self) -> None:
        """Drop what was kept of the last families."""


class Fragments(_Kept):
    """Rendered samples per family and target, kept while the target's part of the family
    (`FamilySpec.parts`) stays equal. A render re-encodes only the targets whose part changed;
    the others' bytes are reused as they are. The samples are those `encoder` makes; a
    format whose samples are the same (text and OpenMetrics: only the HELP and TYPE lines
    differ) shares them, with its own header."""

    def __init__(self) -> None:
        super().__init__()
        self._kept: dict[int, dict[TargetKey, tuple[Any, bytes]]] = {}
        self._kind_headers: dict[tuple[int, Encoder], bytes] = {}

    def _forget(self) -> None:
        self._kept.clear()
        self._kind_headers.clear()

    def family(self, index: int, spec: AnySpec, snapshot: Snapshot, encoder: Encoder,
               units_per_batch: int, header_encoder: Encoder | None = None
               ) -> Iterator[bytes]:
        """The family's header (`header_encoder`'s, else `encoder`'s) and every target's
        samples, in snapshot order.

        A target whose part is bigger than a batch (more jobs than `units_per_batch`) is
        encoded a slice at a time, streamed and not kept: its bytes are large, and with that
        many jobs some change in nearly every refresh.
        """
        header = self._headers.get(index)
        if header is None:
            header = self._headers[index] = _encode(encoder, spec.make())
        if header_encoder is None or header_encoder is encoder:
            yield header
        else:
            own = self._kind_headers.get((index, header_encoder))
            if own is None:
                own = self._kind_headers[(index, header_encoder)] = _encode(header_encoder,
                                                                            spec.make())
            yield own
        kept = self._kept.get(index, {})
        fresh: dict[TargetKey, tuple[Any, bytes]] = {}
        writer = self.writer(spec)
        batch = _Batch(writer, header, encoder)
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
                    encoded = _part_body(writer, encoder, header, key, part, lo,
                                         min(lo + units_per_batch, size))
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


class _Recorded:
    """What a family spec's `add` gives `add_metric`, recorded as it came (labels, value,
    timestamp) instead of made into prometheus-client samples: `_Lines` writes the sample lines
    from it directly. A sample cost 1.5 us to make (a dict and a named tuple) before the 2.4 us
    of its line; the caches' batches and the request counts of every scrape made thousands."""

    __slots__ = ("samples",)

    def __init__(self) -> None:
        self.samples: list[tuple[Sequence[str], float, float | None]] = []

    def add_metric(self, labels: Sequence[str], value: float,
                   timestamp: float | None = None) -> None:
        self.samples.append((labels, value, timestamp))


class _Lines:
    """The text-format sample lines of one family spec's recorded samples, byte for byte what
    `_sample_lines` writes for the family made from them (and so `generate_latest`), or None
    for what it does not write that way: a timestamp, labels that are not one per label name,
    a reserved label name. Then the family is made (`replay`) and encoded as before."""

    def __init__(self, spec: AnySpec) -> None:
        self.spec = spec
        family = spec.make()
        self.sample = f"{family.name}_total" if family.type == "counter" else family.name
        self.names: tuple[str, ...] = tuple(getattr(family, "_labelnames", ()))
        self.order = sorted(range(len(self.names)), key=self.names.__getitem__)
        self.usable = len(set(self.names)) == len(self.names) and all(
            _LEGACY_LABEL.fullmatch(name) for name in self.names)

    def lines(self, samples: Sequence[tuple[Sequence[str], float, float | None]]
              ) -> list[str] | None:
        if not self.usable:
            return None
        names, order, width, sample = self.names, self.order, len(self.names), self.sample
        out = []
        for labels, value, timestamp in samples:
            if timestamp is not None or not isinstance(labels, list | tuple) or (
                    len(labels) != width):
                return None
            if width:
                text = ",".join([f'{names[i]}="{_escaped(labels[i])}"' for i in order])
                out.append(f"{sample}{{{text}}} {_go_float(value)}\n")
            else:
                out.append(f"{sample} {_go_float(value)}\n")
        return out

    def replay(self, samples: Sequence[tuple[Sequence[str], float, float | None]]) -> Metric:
        family = self.spec.make()
        for labels, value, timestamp in samples:
            family.add_metric(labels, value, timestamp)
        return family

    def encoded(self, encoder: Encoder, header: bytes,
                samples: Sequence[tuple[Sequence[str], float, float | None]],
                marks: Sequence[tuple[int, int]]) -> list[bytes]:
        """The sample lines of `samples[first:last]` for each (first, last) of `marks`, in
        `encoder`'s format: written directly where `lines` can, else the family replayed,
        encoded, and its body split back by line. A single mark is every sample."""
        lines = self.lines(samples) if encoder is generate_latest else None
        if lines is not None:
            if len(marks) == 1:
                return ["".join(lines).encode()]
            return ["".join(lines[first:last]).encode() for first, last in marks]
        body = _body(encoder, self.replay(samples), header)
        if len(marks) == 1:
            return [body]
        split = body.split(b"\n")
        return [b"\n".join(split[first:last]) + b"\n" if last > first else b""
                for first, last in marks]


def _part_body(writer: _Lines, encoder: Encoder, header: bytes, key: TargetKey, part: object,
               lo: int, hi: int) -> bytes:
    """Units `lo` to `hi` of one target's part, as sample lines."""
    recorded = _Recorded()
    writer.spec.add(cast(Family, recorded), key, part, lo, hi)
    return writer.encoded(encoder, header, recorded.samples, ((0, len(recorded.samples)),))[0]


class _Batch:
    """Small parts of one family encoded together, then split back per target by their
    sample counts (one line per sample)."""

    def __init__(self, writer: _Lines, header: bytes, encoder: Encoder) -> None:
        self._writer, self._header, self._encoder = writer, header, encoder
        self._family = _Recorded()
        self._keys: list[TargetKey] = []
        self._marks: list[tuple[int, int]] = []
        self.units = 0

    def add(self, key: TargetKey, part: object, size: int) -> None:
        samples = self._family.samples
        first = len(samples)
        self._writer.spec.add(cast(Family, self._family), key, part, 0, size)
        self._keys.append(key)
        self._marks.append((first, len(samples)))
        self.units += max(1, size)

    def flush(self) -> dict[TargetKey, bytes]:
        if not self._marks:
            return {}
        recorded, keys, marks = self._family.samples, self._keys, self._marks
        self._family, self._keys, self._marks, self.units = _Recorded(), [], [], 0
        return dict(zip(keys, self._writer.encoded(self._encoder, self._header, recorded,
                                                   marks), strict=True))


TARGETS_PER_CHUNK = 64
_UNMADE = object()  # a part not made yet


@dataclass(frozen=True, slots=True)
class _Chunk:
    """Consecutive targets' samples of one family, compressed together: who they are and the
    parts they were encoded from (side by side: 408,000 (key, part) pairs at 10,200 targets
    held 23 MB), where each one's samples end, and the segment."""

    keys: tuple[TargetKey, ...]
    parts: tuple[Any, ...]
    ends: array[int]  # not a tuple of ints: 370,000 of those held 14 MB at 10,200 targets
    segment: _Segment


def _same(kept: object, part: object) -> bool:
    return kept is part or kept == part


def _nowhere(_key: TargetKey) -> tuple[_Chunk, int] | None:
    """No other chunk holds the target (a chunk made again in place)."""
    return None


def _samples_at(inflated: dict[int, bytes], chunk: _Chunk, position: int) -> bytes:
    """The samples of the chunk's member at `position`; `inflated` keeps each chunk's
    inflated samples (by id) for the render."""
    raw = inflated.get(id(chunk))
    if raw is None:
        raw = inflated[id(chunk)] = _inflate(chunk.segment.data)
    return raw[chunk.ends[position - 1] if position else 0:chunk.ends[position]]


class Segments(_Kept):
    """The snapshot's encoded samples per family, kept compressed, `TARGETS_PER_CHUNK`
    targets to a chunk, each chunk a segment of its own (see "Compressed segments" below): a
    render re-encodes only the targets whose part of the family (`FamilySpec.parts`) changed,
    and compresses again only the chunks that hold one; an unchanged target in such a chunk
    is taken from the old chunk, inflated. What is kept is the compressed stream (about 30
    times smaller than the text), not the text."""

    def __init__(self, encoder: Encoder | None = None) -> None:
        super().__init__()
        self.encoder = encoder or SAMPLE_ENCODER
        self._chunks: dict[int, list[_Chunk]] = {}
        # id(target result) -> (that result, its part of each family, made when first asked
        # for). A result is immutable, so the same object has the same parts: only the targets
        # whose result was replaced since the last render have theirs made again (at 10,200
        # targets, making 40 families' parts of every target was most of a render).
        self._rows: dict[int, tuple[TargetResult, list[Any]]] = {}
        self._rows_of: Snapshot | None = None
        self._all_parts: dict[object, tuple[Snapshot, list[tuple[TargetKey, Any]]]] = {}
        self._joined: dict[int, tuple[tuple[_Segment, ...], _Segment]] = {}
        # Per family, what its last render was made from (the snapshot's targets, or the
        # shared all_parts list) and where each of its chunks starts in it, when its chunks
        # cover every target: the next render then looks only at the places that changed.
        self._base: dict[int, tuple[Sequence[Any], tuple[int, ...]]] = {}
        # (id(old source), id(new source)) -> (old, new, the places that changed), this render.
        self._diffs: dict[tuple[int, int], tuple[object, object, list[int] | None]] = {}
        self._diffs_of: Snapshot | None = None

    def _forget(self) -> None:
        self._chunks.clear()
        self._rows.clear()
        self._rows_of = None
        self._all_parts.clear()
        self._joined.clear()
        self._base.clear()
        self._diffs.clear()
        self._diffs_of = None

    def _source(self, spec: AnySpec, snapshot: Snapshot) -> Sequence[Any]:
        """What the family's parts come from, one item per target in snapshot order: the
        targets themselves, or the (key, part) list its all_parts gives (made once per
        snapshot for every family sharing the function: the usage families all show the same
        records, and each made them over every target)."""
        if spec.part is not None:
            return snapshot.targets
        made = self._all_parts.get(spec.all_parts)
        if made is None or made[0] is not snapshot:
            made = self._all_parts[spec.all_parts] = (snapshot, list(spec.parts(snapshot)))
        return made[1]

    def _changes(self, old: Sequence[Any], new: Sequence[Any], by_target: bool,
                 snapshot: Snapshot) -> list[int] | None:
        """The places where `new` differs from `old` (an item that is another object), or
        None when the targets themselves differ (added, removed, moved or rekeyed): worked
        out once per render for all the families made from the same sources."""
        if self._diffs_of is not snapshot:
            self._diffs.clear()
            self._diffs_of = snapshot
        memo = (id(old), id(new))
        found = self._diffs.get(memo)
        if found is not None and found[0] is old and found[1] is new:
            return found[2]
        changed: list[int] | None
        if len(old) != len(new):
            changed = None
        elif by_target:
            changed = changed_places(old, new)
            if any(old[i].key != new[i].key for i in changed):
                changed = None
        else:  # (key, part) pairs, made again for every snapshot: compared at C speed
            second, first = operator.itemgetter(1), operator.itemgetter(0)
            changed = sorted(set(itertools.compress(itertools.count(), map(
                operator.is_not, map(second, old), map(second, new)))).union(
                itertools.compress(itertools.count(), map(
                    operator.is_not, map(first, old), map(first, new)))))
            if any(old[i][0] != new[i][0] for i in changed):
                changed = None
        self._diffs[memo] = (old, new, changed)
        return changed

    def _delta(self, index: int, spec: AnySpec, header: bytes, source: Sequence[Any],
               changed: list[int], starts: tuple[int, ...], units_per_batch: int
               ) -> _Segment | None:
        """The family rendered from its last chunks, looking only at the `changed` places:
        a chunk none of whose targets' parts changed is kept as it is, untouched. None when
        a changed part is (or was) bigger than a batch: the whole render does that."""
        chunks = self._chunks[index]
        joined = self._joined[index]
        part_of, size_of = spec.part, spec.size
        fresh: list[_Chunk] | None = None
        at = 0  # the chunk of the place looked at
        keys: list[TargetKey] = []
        parts: list[Any] | None = None

        def replace_chunk() -> None:
            nonlocal fresh, parts
            if parts is None:
                return
            if fresh is None:
                fresh = list(chunks)
            old = chunks[at]
            group = [(key, part, size_of(part)) for key, part in zip(keys, parts, strict=True)]
            fresh[at] = self._encoded(spec, header, group, old, _nowhere,
                                      partial(_samples_at, {}), units_per_batch)
            parts = None

        for place in changed:
            chunk_of = bisect.bisect_right(starts, place) - 1
            if chunk_of != at:
                replace_chunk()
                at = chunk_of
            item = source[place]
            key, part = (item.key, part_of(item)) if part_of is not None else item
            chunk = chunks[at]
            old_part = chunk.parts[place - starts[at]]
            if _same(old_part, part):
                continue
            if size_of(part) > units_per_batch or size_of(old_part) > units_per_batch:
                return None
            if parts is None:
                keys, parts = list(chunk.keys), list(chunk.parts)
            keys[place - starts[at]] = key
            parts[place - starts[at]] = part
        replace_chunk()
        if fresh is None:
            return joined[1]  # every chunk as it was: the family's segment too
        self._chunks[index] = fresh
        segments = tuple(chunk.segment for chunk in fresh)
        family = _concat(segments)
        self._joined[index] = (segments, family)
        return family

    def _parts_of(self, index: int, spec: AnySpec, snapshot: Snapshot
                  ) -> Iterator[tuple[TargetKey, Any, int]]:
        """(key, part, size) of every target, in snapshot order; a part is made again only
        for a target whose result changed since the last render of the family."""
        part_of = spec.part
        if part_of is None:  # parts that depend on more than their own target
            for key, part in self._source(spec, snapshot):
                yield key, part, spec.size(part)
            return
        if self._rows_of is not snapshot:
            old, width = self._rows, len(self._families or ())
            self._rows = {}
            for target in snapshot.targets:
                row = old.get(id(target))
                if row is None or row[0] is not target:
                    row = (target, [_UNMADE] * width)
                self._rows[id(target)] = row  # holds the result: its id stays its own
            self._rows_of = snapshot
        rows = self._rows
        size_of = None if spec.size is one_unit else spec.size
        for target in snapshot.targets:
            parts = rows[id(target)][1]
            part = parts[index]
            if part is _UNMADE:
                part = parts[index] = part_of(target)
            yield target.key, part, 1 if size_of is None else size_of(part)

    def header(self, index: int, spec: AnySpec) -> bytes:
        header = self._headers.get(index)
        if header is None:
            header = self._headers[index] = _encode(self.encoder, spec.make())
        return header

    def family(self, index: int, spec: AnySpec, snapshot: Snapshot,
               units_per_batch: int) -> _Segment:
        """Every target's samples of the family, in snapshot order, as one segment.

        A target whose part is bigger than a batch (more jobs than `units_per_batch`) is a
        chunk of its own, encoded a slice at a time and, unless the family keeps large parts,
        not kept: with that many jobs some change in nearly every refresh.
        """
        header = self.header(index, spec)
        source = self._source(spec, snapshot)
        base = self._base.get(index)
        if base is not None:
            changed = self._changes(base[0], source, spec.part is not None, snapshot)
            if changed is not None:
                segment = self._delta(index, spec, header, source, changed, base[1],
                                      units_per_batch)
                if segment is not None:
                    self._base[index] = (source, base[1])
                    return segment
        old_chunks = self._chunks.get(index, [])
        # Where each target was, looked up only when the chunks no longer line up with the
        # last render's (targets added or removed): hashing 10,200 keys per family costs.
        where: dict[TargetKey, tuple[_Chunk, int]] = {}

        def lookup(key: TargetKey) -> tuple[_Chunk, int] | None:
            if not where:
                for chunk in old_chunks:
                    for position, old_key in enumerate(chunk.keys):
                        where[old_key] = (chunk, position)
            return where.get(key)

        inflated: dict[int, bytes] = {}  # id(old chunk) -> its samples, once per render
        kept: list[_Chunk] = []
        segments: list[_Segment] = []
        group: list[tuple[TargetKey, Any, int]] = []

        samples_of = partial(_samples_at, inflated)
        starts: list[int] = []  # where each kept chunk starts, while they cover every target
        covered = True
        place = 0  # of the next target

        def close() -> None:
            if not group:
                return
            starts.append(place - len(group))
            # The chunk in the same place last time: the same targets, in the steady state.
            same_place = old_chunks[len(kept)] if len(kept) < len(old_chunks) else None
            chunk = self._reused(group, same_place)
            if chunk is None:
                chunk = self._encoded(spec, header, group, same_place, lookup, samples_of,
                                      units_per_batch)
            kept.append(chunk)
            segments.append(chunk.segment)
            group.clear()

        for key, part, size in self._parts_of(index, spec, snapshot):
            place += 1
            if size <= units_per_batch:
                group.append((key, part, size))
                if len(group) >= TARGETS_PER_CHUNK:
                    close()
                continue
            close()
            old = lookup(key) if spec.keep_large else None
            if spec.keep_large and old is not None and len(old[0].keys) == 1 \
                    and _same(old[0].parts[0], part):
                starts.append(place - 1)
                kept.append(old[0])
                segments.append(old[0].segment)
                continue
            segment = _segment(self._slices(spec, header, key, part, size, units_per_batch))
            segments.append(segment)
            if spec.keep_large:  # parts that change rarely: kept like small ones
                starts.append(place - 1)
                kept.append(_Chunk((key,), (part,), array("Q", (segment.length,)), segment))
            else:
                covered = False
        close()
        self._chunks[index] = kept  # targets gone from the snapshot are dropped
        if covered:
            self._base[index] = (source, tuple(starts))
        else:
            self._base.pop(index, None)
        joined = tuple(segments)
        last = self._joined.get(index)
        if last is not None and len(last[0]) == len(joined) and all(
                map(operator.is_, last[0], joined)):
            return last[1]  # every chunk as it was: the family's segment too
        family = _concat(segments)
        self._joined[index] = (joined, family)
        return family

    @staticmethod
    def _reused(group: list[tuple[TargetKey, Any, int]], chunk: _Chunk | None
                ) -> _Chunk | None:
        """The old chunk, if it holds exactly these targets with equal parts."""
        if chunk is None or len(chunk.keys) != len(group):
            return None
        for key, part, (new_key, new_part, _) in zip(chunk.keys, chunk.parts, group,
                                                    strict=True):
            if not (key is new_key or key == new_key) or not _same(part, new_part):
                return None
        return chunk

    def _encoded(self, spec: AnySpec, header: bytes, group: list[tuple[TargetKey, Any, int]],
                 same_place: _Chunk | None,
                 lookup: Callable[[TargetKey], tuple[_Chunk, int] | None],
                 samples_of: Callable[[_Chunk, int], bytes], units_per_batch: int) -> _Chunk:
        pieces: list[bytes] = [b""] * len(group)
        writer = self.writer(spec)
        batch = _Batch(writer, header, self.encoder)
        pending: list[tuple[int, TargetKey]] = []

        def flush() -> None:
            encoded = batch.flush()
            for position, key in pending:
                pieces[position] = encoded[key]
            pending.clear()

        keys = same_place.keys if same_place is not None else ()
        for position, (key, part, size) in enumerate(group):
            old: tuple[_Chunk, int] | None
            if same_place is not None and position < len(keys) and (
                    keys[position] is key or keys[position] == key):
                old = (same_place, position)
            else:
                old = lookup(key)
            if old is not None and _same(old[0].parts[old[1]], part):
                pieces[position] = samples_of(*old)
                continue
            batch.add(key, part, size)
            pending.append((position, key))
            if batch.units >= units_per_batch:
                flush()
        flush()
        ends, end = [], 0
        for piece in pieces:
            end += len(piece)
            ends.append(end)
        return _Chunk(tuple(key for key, _, _ in group), tuple(part for _, part, _ in group),
                      array("Q", ends),
                      _segment(pieces))

    def _slices(self, spec: AnySpec, header: bytes, key: TargetKey, part: object, size: int,
                units_per_batch: int) -> Iterator[bytes]:
        for lo in range(0, size, units_per_batch):
            yield _part_body(self.writer(spec), self.encoder, header, key, part, lo,
                             min(lo + units_per_batch, size))


def render_snapshot(snapshot: Snapshot, families: Sequence[AnySpec], encoder: Encoder,
                    segments: Segments | None = None,
                    jobs_per_slice: int = JOBS_PER_SLICE) -> Iterator[bytes]:
    """The snapshot part of the exposition (no `# EOF`), in pieces, encoded with `encoder`;
    with `segments` (made with the same encoder), the samples of targets unchanged since the
    last render are reused. Consume it whole: it holds `segments`' lock until it ends."""
    segments = segments or Segments(encoder)
    with segments.lock:
        for index, spec in enumerate(segments.families(families)):
            yield segments.header(index, spec)
            yield _inflate(segments.family(index, spec, snapshot, jobs_per_slice).data)


def render_samples(snapshot: Snapshot, families: Sequence[AnySpec], segments: Segments,
                   jobs_per_slice: int = JOBS_PER_SLICE) -> Iterator[_Segment]:
    """Each family's sample lines (no header), in family order, compressed, encoded once for
    every format (`SAMPLE_ENCODER`: see `Format`). Consume it whole: it holds `segments`'
    lock until it ends."""
    with segments.lock:
        for index, spec in enumerate(segments.families(families)):
            yield segments.family(index, spec, snapshot, jobs_per_slice)


# Formats. Sample lines are the same bytes in the text format and in OpenMetrics for the
# families the cache keeps (gauges and `CounterFamily` counters without timestamps, every name
# a legacy name: `FamilySpec` checks both), so one encoding serves both; only the HELP and TYPE
# lines differ. The escaping schemes that leave legacy names as they are (underscores,
# allow-utf-8) are answered with the same bytes; `dots` and `values` would rewrite names that
# need no escaping, and are answered with underscores (the Content-Type says so).

SAMPLE_ENCODER: Encoder = generate_latest
TEXT, OPENMETRICS = "text", "openmetrics"
_ENCODERS: dict[str, Encoder] = {TEXT: generate_latest, OPENMETRICS: generate_openmetrics}
_TEXT_0_0_4 = "text/plain; version=0.0.4; charset=utf-8"


@dataclass(frozen=True, slots=True)
class Format:
    kind: str  # TEXT or OPENMETRICS
    content_type: str


def _params(parts: list[str]) -> dict[str, str]:
    params: dict[str, str] = {}
    for part in parts:
        key, equals, value = part.partition("=")
        if equals:
            params.setdefault(key.strip().lower(), value.strip().strip('"'))
    return params


def _quality(params: dict[str, str]) -> float:
    try:
        q = float(params.get("q", "1"))
    except ValueError:
        return 1.0
    return q if 0.0 <= q <= 1.0 else 1.0


def negotiate(accept: str | None) -> Format:
    """The format for an Accept header, as Prometheus' client_golang negotiates it: the ranges
    in order of preference (q, then as written; q=0 refuses), the first that names a format
    and a version this exporter speaks wins; an unknown version is passed over, and the text
    format is the answer when none is left. A bounded set of answers, whatever the header."""
    ranges = []
    for position, entry in enumerate((accept or "").split(",")):
        media, *parts = entry.split(";")
        params = _params(parts)
        quality = _quality(params)
        if quality > 0:
            ranges.append((-quality, position, media.strip().lower(), params))
    for _, _, media, params in sorted(ranges, key=lambda r: (r[0], r[1])):
        version = params.get("version", "")
        escaping = "allow-utf-8" if params.get("escaping") == "allow-utf-8" else "underscores"
        if media == "application/openmetrics-text":
            if version == "":
                return Format(OPENMETRICS, "application/openmetrics-text; version=1.0.0; "
                                          "charset=utf-8")
            if version in ("1.0.0", "0.0.1"):
                return Format(OPENMETRICS, f"application/openmetrics-text; version={version}; "
                                           f"charset=utf-8; escaping={escaping}")
        elif media == "text/plain":
            if version in ("", "0.0.4"):
                return Format(TEXT, _TEXT_0_0_4)
            if version == "1.0.0":
                return Format(TEXT, f"text/plain; version=1.0.0; charset=utf-8; "
                                    f"escaping={escaping}")
    return Format(TEXT, _TEXT_0_0_4)


# Compressed segments. Each family's samples (and each format's header of it) are compressed
# on their own, ended with a sync flush: any of them, in any order, concatenated, is a valid
# deflate stream. A full scrape and a `name[]` filter are both joins of kept segments; the
# gzip trailer's CRC-32 is combined from the segments' (zlib's crc32_combine, which Python's
# zlib does not offer).

_CRC_POLY = 0xEDB88320


def _multmodp(a: int, b: int) -> int:
    """a * b modulo the CRC-32 polynomial (reflected, as zlib)."""
    m, p = 1 << 31, 0
    while True:
        if a & m:
            p ^= b
            if a & (m - 1) == 0:
                return p
        m >>= 1
        b = (b >> 1) ^ _CRC_POLY if b & 1 else b >> 1


_X2N = [1 << 30]  # x^(2^n) modulo the polynomial
for _ in range(31):
    _X2N.append(_multmodp(_X2N[-1], _X2N[-1]))


def _shift(length: int) -> int:
    """x^(8 * length) modulo the polynomial: what a CRC is multiplied by to skip `length`
    bytes."""
    p, k = 1 << 31, 3
    while length:
        if length & 1:
            p = _multmodp(_X2N[k & 31], p)
        length >>= 1
        k += 1
    return p


@dataclass(frozen=True, slots=True)
class _Segment:
    # Raw deflate, sync-flushed, not final, decodable on its own: one piece, or the chunks' own
    # pieces one after the other for a family (not copied: at 10,200 targets a family copy
    # and one per format of the whole exposition held 14 MB more).
    data: tuple[bytes, ...]
    crc: int
    length: int
    shift: int  # _shift(length)


_NO_SHIFT = 1 << 31  # x^0: what skipping no bytes multiplies a CRC by
_EMPTY = _Segment((), 0, 0, _NO_SHIFT)


def _segment(pieces: Iterable[bytes]) -> _Segment:
    """The pieces as one segment, compressed `INFLATE_PIECE` bytes at a time (a chunk in one
    call): every call into zlib lets go of the GIL and must win it back, and behind 16 busy
    call workers each of a chunk's 64 targets' pieces waited for it (a render that took 11 s
    alone took 60-90 s beside them). A target of 10,000 jobs is never joined whole."""
    compressor = zlib.compressobj(GZIP_LEVEL, zlib.DEFLATED, -zlib.MAX_WBITS)
    out, crc, length = [], 0, 0
    for piece in _gathered(pieces):
        out.append(compressor.compress(piece))
        crc = zlib.crc32(piece, crc)
        length += len(piece)
    if not length:
        return _EMPTY
    out.append(compressor.flush(zlib.Z_SYNC_FLUSH))
    return _Segment((b"".join(out),), crc, length, _shift(length))


def _concat(segments: Sequence[_Segment]) -> _Segment:
    """The segments one after the other, as one segment."""
    if len(segments) == 1:
        return segments[0]
    crc, length, shift = 0, 0, _NO_SHIFT
    for segment in segments:
        if segment.length:
            crc = _multmodp(segment.shift, crc) ^ segment.crc
            shift = _multmodp(segment.shift, shift)
            length += segment.length
    return _Segment(tuple(piece for segment in segments for piece in segment.data), crc,
                    length, shift)


def _inflate(data: Iterable[bytes]) -> bytes:
    """What a segment (or segments joined) holds."""
    inflater = zlib.decompressobj(-zlib.MAX_WBITS)
    return b"".join([inflater.decompress(piece) for piece in data])


def _join(segments: Iterable[_Segment]) -> _Compressed:
    data, crc, length = [_GZIP_HEADER], 0, 0
    for segment in segments:
        data += segment.data
        crc = _multmodp(segment.shift, crc) ^ segment.crc
        length += segment.length
    return _Compressed(tuple(data), crc, length)


INFLATE_PIECE = 1 << 18  # bytes of an uncompressed body made at a time


def _inflated(cached: _Compressed, tail: Sequence[bytes]) -> Iterator[bytes]:
    """The cached part inflated a piece at a time, then the tail's pieces, gathered."""
    return _gathered(itertools.chain(_inflating(cached.pieces[1:]), tail))


def _inflating(compressed: Iterable[bytes]) -> Iterator[bytes]:
    """What compressed pieces of one raw deflate stream hold, at most `INFLATE_PIECE` bytes
    at a time."""
    inflater = zlib.decompressobj(-zlib.MAX_WBITS)
    for one in compressed:
        data = memoryview(one)
        while data:
            piece = inflater.decompress(data, INFLATE_PIECE)
            data = memoryview(inflater.unconsumed_tail)
            if piece:
                yield piece


def _gathered(pieces: Iterable[bytes]) -> Iterator[bytes]:
    """Small pieces (a chunk's, a target's request counts) joined into pieces of about
    `INFLATE_PIECE` bytes: one send each, not one per small piece, and never the whole."""
    out: list[bytes] = []
    size = 0
    for piece in pieces:
        out.append(piece)
        size += len(piece)
        if size >= INFLATE_PIECE:
            yield b"".join(out)
            out, size = [], 0
    if out:
        yield b"".join(out)


def _gzip_finish(cached: _Compressed, tail: Sequence[bytes]) -> list[bytes]:
    """The gzip member's pieces: the cached part (not joined or copied), then the tail
    compressed `INFLATE_PIECE` bytes at a time. Not a target's request counts at a time: each
    call into zlib lets go of the GIL and must win it back, and behind busy call workers the
    10,200 calls of a scrape took seconds."""
    compressor = zlib.compressobj(GZIP_LEVEL, zlib.DEFLATED, -zlib.MAX_WBITS)
    body, crc, length = [], cached.crc, cached.length
    for piece in _gathered(tail):
        body.append(compressor.compress(piece))
        crc = zlib.crc32(piece, crc)
        length += len(piece)
    body.append(compressor.flush(zlib.Z_FINISH))
    return [*cached.pieces, b"".join(body), struct.pack("<II", crc, length & 0xFFFFFFFF)]


class _Layout:
    """The snapshot's families, each one's sample name (what `name[]` selects), and its HELP
    and TYPE lines per format, compressed."""

    def __init__(self, families: Sequence[AnySpec]) -> None:
        self.families = tuple(families)
        self.names = tuple(sample_name(spec) for spec in self.families)
        self.headers = {kind: tuple(_segment([_encode(encoder, spec.make())])
                                    for spec in self.families)
                        for kind, encoder in _ENCODERS.items()}


@dataclass(frozen=True, slots=True)
class _Rendered:
    """One snapshot rendered with one layout: each family's compressed samples, and the whole
    snapshot part per format."""
    layout: _Layout
    samples: tuple[_Segment, ...]
    full: dict[str, _Compressed]


class _Published:
    """One snapshot, and its rendering once there is one (set under the scrape lock when a
    scrape renders it)."""

    __slots__ = ("layout", "rendered", "snapshot")

    def __init__(self, snapshot: Snapshot, layout: _Layout,
                 rendered: _Rendered | None = None) -> None:
        self.snapshot = snapshot
        self.layout = layout
        self.rendered = rendered


Render = Callable[[Snapshot, Sequence[AnySpec], Segments], Iterable[_Segment]]


def sample_name(spec: AnySpec) -> str:
    """The name every sample of the family carries (what `name[]` selects)."""
    return f"{spec.name}_total" if spec.kind == "counter" else spec.name


class CachedExposition:
    """Negotiates the format like Prometheus and caches the snapshot part per snapshot.

    Without `start()` the first scrape after a snapshot change renders it (tests, benchmarks).
    After `start()` a background thread renders each new snapshot once for every format and
    every `name[]` filter (`render_samples`, then one compressed segment per family), and
    publishes it: scrapes serve the last published snapshot and never wait for the background
    render. Swaps during a render are coalesced, and after a render the thread rests as long
    as the render used the CPU, so that targets swapping snapshots in turn keep it to half a
    core at most; renders start at least `min_gap` seconds apart (less below `gap_full_at`
    targets, in proportion). A snapshot that makes the
    exporter ready is rendered without waiting for the swaps to pause or the gap.

    The background renderer renders only while /metrics is scraped (a scrape in the last
    `SCRAPE_TTL` seconds), and the snapshot that makes the exporter ready; the scrape that
    comes after a pause renders the snapshot itself.
    After a failed background render, scrapes render every snapshot until a render succeeds:
    a render that keeps failing fails the scrapes, never serves stale data in silence.
    """

    SCRAPE_TTL = 900.0

    def __init__(self, snapshot: Callable[[], Snapshot], families: Sequence[AnySpec],
                 live: Sequence[Collector | LiveFamilies], *, render: Render = render_samples,
                 clock: Callable[[], float] = time.monotonic,
                 render_clock: Callable[[], float] = time.thread_time,
                 rest: Callable[[float], object] | None = None,
                 settle: float = 0.0, max_delay: float = 10.0, min_gap: float = 0.0,
                 gap_full_at: int = 1,
                 published: Callable[[Snapshot | None], object] | None = None,
                 ready: Callable[[], bool] | None = None) -> None:
        self._snapshot = snapshot
        # Whether the current snapshot makes the exporter ready (without making one).
        self._ready = ready or (lambda: snapshot().ready)
        # Before rendering, wait until swaps pause for `settle` seconds (at most `max_delay`):
        # a burst of targets refreshing one after another is rendered once or twice, not once
        # per rest period.
        self._settle = settle
        self._max_delay = max_delay
        # Renders start at least `min_gap` seconds apart: targets refreshing at their phase of
        # each second pause between seconds, and a render each second costs more than the
        # refreshes (the snapshot's every item is looked at once a render).
        self._min_gap = min(min_gap, max_delay)
        # ... from `gap_full_at` targets on; below, in proportion to the targets: a few
        # targets' swaps pause often enough for the settle wait to coalesce them, and a gap
        # would only hold back their data (a single target of 10,000 jobs showed its jobs 5 s
        # later with the whole gap).
        self._gap_full_at = max(1, gap_full_at)
        # Told each snapshot the background renderer has published (even when its render
        # failed: scrapes render it themselves then), and None once it stops.
        self._on_published = published
        self._layout = _Layout(families)
        # The live collectors in order, each as the families whose samples are kept per target
        # between scrapes (the request counts) and a registry of the rest.
        self._live: list[tuple[tuple[AnySpec, ...], CollectorRegistry]] = []
        for collector in live:
            registry = CollectorRegistry(auto_describe=False)
            if isinstance(collector, LiveFamilies):
                registry.register(_Rest(collector))
                kept = () if collector.requests is None else (collector.requests,)
                self._live.append((kept, registry))
            else:
                registry.register(collector)
                self._live.append(((), registry))
        # The request counts' samples, shared by both formats (about 6 MB at 10,200 targets,
        # and a format's scrape does not encode again what the other's did).
        self._live_fragments = Fragments()
        self._render = render
        self._clock = clock
        # The renderer's own CPU time: it rests as long as its render used the CPU (waiting for
        # the GIL behind busy call workers is not counted, or a slow render would rest long).
        self._render_clock = render_clock
        self._publish_lock = threading.Lock()  # one publish at a time
        self._scrape_lock = threading.Lock()  # renders on the scrape path, one at a time
        self._published = _Published(snapshot(), self._layout)
        self._scraped: float | None = None  # when /metrics was last asked for
        self._segments = Segments()
        self._failed = False
        self._changed = threading.Event()
        self._stopping = threading.Event()
        self._rest = rest or self._rest_unless_readying
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

    def set_families(self, families: Sequence[AnySpec]) -> None:
        """Render these families from now on (a reload): the next render renders the current
        snapshot with them, and until then scrapes serve the last rendering, whole."""
        self._layout = _Layout(families)
        self._changed.set()

    def render(self, accept: str | None, accept_encoding: str | None,
               names: Iterable[str] | None = None) -> tuple[list[tuple[str, str]], bytes]:
        """(headers, body) for one scrape; `names` (the `name[]` values) keeps the families
        with a sample of one of those names, as prometheus-client's filter does."""
        headers, _, pieces = self.stream(accept, accept_encoding, names)
        return headers, b"".join(pieces)

    def stream(self, accept: str | None, accept_encoding: str | None,
               names: Iterable[str] | None = None
               ) -> tuple[list[tuple[str, str]], int, Iterator[bytes]]:
        """(headers, body length, body pieces) for one scrape, as `render`: an uncompressed
        body is inflated piece by piece as it is sent, never held whole (115 MB at 10,200
        targets)."""
        wanted = None if names is None else frozenset(names)
        fmt = negotiate(accept)
        rendered = self._rendered()
        if wanted is None:
            cached = rendered.full[fmt.kind]
        else:
            headers = rendered.layout.headers[fmt.kind]
            cached = _join(segment for i, name in enumerate(rendered.layout.names)
                           if name in wanted and rendered.samples[i].length
                           for segment in (headers[i], rendered.samples[i]))
        live = self._render_live(fmt.kind, wanted)
        if fmt.kind == OPENMETRICS:
            live.append(_EOF)
        headers_out = [("Content-Type", fmt.content_type)]
        if gzip_accepted(accept_encoding or ""):
            headers_out.append(("Content-Encoding", "gzip"))
            body = _gzip_finish(cached, live)
            return headers_out, sum(map(len, body)), _gathered(body)
        return (headers_out, cached.length + sum(map(len, live)), _inflated(cached, live))

    def _render_live(self, kind: str, names: frozenset[str] | None) -> list[bytes]:
        """The live self-metrics; the request counts of targets not called since the last
        scrape in this format are not encoded again."""
        encoder = _ENCODERS[kind]
        fragments = self._live_fragments
        pieces: list[bytes] = []
        with fragments.lock:
            index = 0
            for kept, rest in self._live:
                for spec in kept:
                    if names is None or sample_name(spec) in names:
                        family = list(fragments.family(index, spec, _NO_SNAPSHOT,
                                                       SAMPLE_ENCODER, JOBS_PER_SLICE,
                                                       header_encoder=encoder))
                        if names is None or any(family[1:]):
                            pieces += family
                    index += 1
                registry = rest if names is None else _restricted(rest, names)
                pieces.append(encoder(registry).removesuffix(_EOF))
        return pieces

    def _rendered(self) -> _Rendered:
        self._scraped = self._clock()
        if not self._background():
            self._publish(self._snapshot())
        published = self._published
        rendered = published.rendered
        if rendered is not None:
            return rendered
        with self._scrape_lock:  # not behind the background render
            if published.rendered is None:
                published.rendered = self._render_all(published.snapshot, published.layout)
            return published.rendered

    def _render_all(self, snapshot: Snapshot, layout: _Layout) -> _Rendered:
        samples = tuple(self._render(snapshot, layout.families, self._segments))
        if len(samples) != len(layout.families):
            raise RuntimeError(f"{len(samples)} families rendered of {len(layout.families)}")
        full = {kind: _join(segment for pair in zip(headers, samples, strict=True)
                            for segment in pair)
                for kind, headers in layout.headers.items()}
        return _Rendered(layout, samples, full)

    def _publish(self, snapshot: Snapshot) -> None:
        with self._publish_lock:
            layout = self._layout
            if snapshot is self._published.snapshot and layout is self._published.layout:
                return
            scraped = self._scraped
            # The snapshot that makes the exporter ready is rendered even if nobody scraped
            # yet: Prometheus scrapes once /readyz turns 200, and that render would otherwise
            # run on its scrape, beside the background calls readiness lets go.
            wanted = (scraped is not None and self._clock() - scraped <= self.SCRAPE_TTL) or (
                snapshot.ready and not self._published.snapshot.ready)
            self._published = _Published(snapshot, layout,
                                         self._render_all(snapshot, layout) if wanted else None)
            self._failed = False

    def readying(self) -> bool:
        """True while the background renderer has yet to publish the snapshot that makes the
        exporter ready (every target refreshed): /readyz waits for that render. False once
        the renderer stops or is gone (nothing would end the wait)."""
        thread = self._thread
        return (thread is not None and not self._failed and not self._stopping.is_set()
                and thread.is_alive() and self._readying())

    def _readying(self) -> bool:
        """Whether the current snapshot makes the exporter ready and /metrics does not show
        it yet."""
        return self._ready() and not self._published.snapshot.ready

    def _settled(self) -> bool:
        """Wait for a pause in the swaps; False when stopping. A snapshot that makes the
        exporter ready (every target's first refresh done) is rendered without waiting: the
        collectors' swaps that follow it would otherwise hold /readyz back."""
        began = time.monotonic()
        while self._settle > 0 and time.monotonic() - began < self._max_delay:
            if self._readying():
                break
            if not self._changed.wait(self._settle):
                break
            self._changed.clear()
            if self._stopping.is_set():
                return False
        return not self._stopping.is_set()

    def _rest_unless_readying(self, seconds: float) -> None:
        """Rest, but not past the swap that makes the exporter ready."""
        end = time.monotonic() + seconds
        while (left := end - time.monotonic()) > 0 and not self._readying():
            if self._stopping.wait(min(left, 0.25)):
                return

    def _run(self) -> None:
        while True:
            self._changed.wait()
            self._changed.clear()  # swaps during the render wake the next pass: coalesced
            if self._stopping.is_set() or not self._settled():
                return
            began, began_at = self._render_clock(), self._clock()
            snapshot = self._snapshot()
            try:
                self._publish(snapshot)
            except Exception:
                self._failed = True
                log.exception("rendering the exposition failed; scrapes render it themselves "
                              "until a render succeeds")
            if self._on_published is not None:
                self._on_published(snapshot)
            # As long as the render used the CPU, and until the gap after it began.
            self._rest(max(self._render_clock() - began,
                           self._gap(snapshot) - (self._clock() - began_at)))

    def _gap(self, snapshot: Snapshot) -> float:
        """The least time between the starts of two renders after rendering `snapshot`."""
        return self._min_gap * min(1.0, len(snapshot.targets) / self._gap_full_at)
