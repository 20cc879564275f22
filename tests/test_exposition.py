"""The cached scrape path gives prometheus-client's own bytes, in every negotiated format."""

from __future__ import annotations

import contextlib
import gzip
import random
import threading
import time
import zlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import replace
from functools import partial
from typing import Any

import pytest
from prometheus_client import generate_latest
from prometheus_client.metrics_core import CounterMetricFamily
from prometheus_client.openmetrics.exposition import generate_latest as generate_openmetrics
from prometheus_client.registry import CollectorRegistry

from exporter.aws.counting import ApiRequestCounter
from exporter.collectors import findings, jobs, status, usage
from exporter.collectors.base import Settings
from exporter.collectors.usage import Usage
from exporter.engine.selfmetrics import SelfCollector, SnapshotCollector, snapshot_families
from exporter.model import Health, Snapshot, TargetKey, TargetResult
from exporter.render.exposition import (
    TARGETS_PER_CHUNK,
    CachedExposition,
    Segments,
    _join,
    _Segment,
    _segment,
    negotiate,
    render_samples,
    render_snapshot,
)
from exporter.render.families import TARGET_LABELS, AnySpec, CounterFamily, Family, FamilySpec
from tests.conftest import wait_for
from tests.snapshots import ACCOUNT, MEMBER, snapshot

PROMETHEUS_ACCEPT = ("application/openmetrics-text;version=1.0.0,application/openmetrics-text;"
                     "version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1")
TAGS = ("team", "cost-center")
FAMILIES = snapshot_families(Settings(tag_keys=TAGS))
openmetrics: Callable[[CollectorRegistry], bytes] = generate_openmetrics


class Holder:
    def __init__(self) -> None:
        self.snapshot = snapshot()
        self.requests = ApiRequestCounter()
        self.live = SelfCollector(self.requests, build=("0.0.0", "3.11.0", "1.0.0"))
        self.exposition = CachedExposition(lambda: self.snapshot, FAMILIES, [self.live])

    def reference(self) -> CollectorRegistry:
        registry = CollectorRegistry(auto_describe=False)
        registry.register(SnapshotCollector(lambda: self.snapshot, FAMILIES))
        registry.register(self.live)
        return registry


def single_gzip_member(data: bytes) -> bytes:
    inflater = zlib.decompressobj(16 + zlib.MAX_WBITS)
    plain = inflater.decompress(data)
    assert inflater.eof and inflater.unused_data == b"", "not exactly one gzip member"
    assert plain == gzip.decompress(data)
    return plain


@pytest.mark.parametrize(("accept", "generate", "content_type"), [
    (None, generate_latest, "text/plain; version=0.0.4; charset=utf-8"),
    ("text/plain", generate_latest, "text/plain; version=0.0.4; charset=utf-8"),
    (PROMETHEUS_ACCEPT, generate_openmetrics, "application/openmetrics-text; version=1.0.0"),
    ("application/openmetrics-text;version=1.0.0;escaping=allow-utf-8",
     partial(generate_openmetrics, escaping="allow-utf-8"),
     "application/openmetrics-text; version=1.0.0; charset=utf-8; escaping=allow-utf-8"),
    ("text/plain;version=1.0.0;escaping=allow-utf-8", partial(generate_latest,
                                                              escaping="allow-utf-8"),
     "text/plain; version=1.0.0; charset=utf-8; escaping=allow-utf-8"),
])
def test_same_bytes_as_prometheus_client(accept: str | None, generate: object,
                                         content_type: str) -> None:
    holder = Holder()
    expected = generate(holder.reference())  # type: ignore[operator]
    for _ in range(2):  # the second scrape comes from the cache
        headers, body = holder.exposition.render(accept, None)
        assert body == expected
        assert dict(headers)["Content-Type"].startswith(content_type)
        headers, compressed = holder.exposition.render(accept, "gzip, deflate")
        assert dict(headers)["Content-Encoding"] == "gzip"
        assert single_gzip_member(compressed) == expected


def test_live_metrics_change_while_the_snapshot_part_is_cached() -> None:
    holder = Holder()
    holder.exposition.render(None, "gzip")
    cached = holder.exposition._published.rendered
    holder.requests.inc(TargetKey(ACCOUNT, "eu-west-1"), "DescribeClassificationJob", "success")
    _, body = holder.exposition.render(None, "gzip")
    assert holder.exposition._published.rendered is cached
    assert single_gzip_member(body) == generate_latest(holder.reference())
    assert b'operation="DescribeClassificationJob"' in gzip.decompress(body)


@pytest.mark.parametrize(("accept", "generate"), [(None, generate_latest),
                                                  (PROMETHEUS_ACCEPT, generate_openmetrics)])
def test_live_request_counts_stay_exact_as_targets_are_called_forgotten_and_rekeyed(
        accept: str | None, generate: Callable[[CollectorRegistry], bytes]) -> None:
    holder = Holder()
    rng = random.Random(3)  # noqa: S311 (a reproducible sequence of calls)
    keys = [TargetKey(f"{n:012d}", region) for n in range(30)
            for region in ("eu-west-1", "us-east-1")]
    for step in range(40):
        for _ in range(rng.randint(0, 5)):
            holder.requests.inc(rng.choice(keys), rng.choice(["ListClassificationJobs",
                                                              "DescribeClassificationJob"]),
                                rng.choice(["success", "ThrottlingException"]))
        if step % 7 == 3:
            holder.requests.forget(rng.choice(keys))
        if step % 11 == 5:
            old = rng.choice(keys)
            holder.requests.rekey(old, TargetKey(f"9{step:011d}", old.region))
        assert holder.exposition.render(accept, None)[1] == generate(holder.reference())


def test_a_target_not_called_between_scrapes_keeps_its_encoded_counts() -> None:
    holder = Holder()
    quiet, busy = TargetKey(ACCOUNT, "eu-west-1"), TargetKey(ACCOUNT, "us-east-1")
    for key in (quiet, busy):
        holder.requests.inc(key, "ListClassificationJobs", "success")
    holder.exposition.render(None, None)
    kept = dict(holder.exposition._live_fragments._kept[0])
    holder.requests.inc(busy, "ListClassificationJobs", "success")
    _, body = holder.exposition.render(None, None)
    now = holder.exposition._live_fragments._kept[0]
    assert now[quiet] is kept[quiet] and now[busy] is not kept[busy]
    assert body == generate_latest(holder.reference())


def test_both_formats_share_the_encoded_counts_and_keep_their_own_headers() -> None:
    holder = Holder()
    key = TargetKey(ACCOUNT, "eu-west-1")
    holder.requests.inc(key, "ListClassificationJobs", "success")
    _, text = holder.exposition.render(None, None)
    kept = holder.exposition._live_fragments._kept[0][key]
    _, scraped = holder.exposition.render(PROMETHEUS_ACCEPT, None)
    assert holder.exposition._live_fragments._kept[0][key] is kept  # not encoded again
    assert text == generate_latest(holder.reference())
    assert scraped == openmetrics(holder.reference())


def test_a_new_snapshot_is_rendered_again() -> None:
    holder = Holder()
    _, before = holder.exposition.render(None, None)
    holder.snapshot = Snapshot(holder.snapshot.targets[1:])
    _, after = holder.exposition.render(None, None)
    assert after == generate_latest(holder.reference()) != before
    assert b"job-run" in before and b"job-run" not in after


@pytest.mark.parametrize("generate", [generate_latest, generate_openmetrics])
@pytest.mark.parametrize("jobs_per_slice", [1, 2, 500])
def test_slices_join_to_the_full_rendering(generate: Callable[[CollectorRegistry], bytes],
                                           jobs_per_slice: int) -> None:
    holder = Holder()
    registry = CollectorRegistry(auto_describe=False)
    registry.register(SnapshotCollector(lambda: holder.snapshot, FAMILIES))
    expected = generate(registry).removesuffix(b"# EOF\n")
    pieces = render_snapshot(holder.snapshot, FAMILIES, generate, jobs_per_slice=jobs_per_slice)
    assert b"".join(pieces) == expected


def mutated(snap: Snapshot, rng: random.Random, step: int) -> Snapshot:
    """`snap` with a few targets changed the ways a refresh or a collector changes them."""
    targets = list(snap.targets)
    for _ in range(rng.randint(0, 3)):
        i = rng.randrange(len(targets))
        t = targets[i]
        change = rng.choice(["jobs", "status", "findings", "health", "usage", "rekey", "drop",
                             "add", "none"])
        if change == "jobs" and jobs.jobs_of(t):
            value = t.get(jobs.SLOT)
            assert value is not None
            job = rng.choice(value.jobs)
            grown = replace(job, objects_to_process=step, name=f"{job.name}\r{step}")
            t = t.with_value(jobs.SLOT, replace(value, jobs=tuple(
                grown if j is job else j for j in value.jobs)))
        elif change == "status":
            refresh = t.health_of("jobs")
            t = t.with_health("jobs", Health(
                not (refresh and refresh.success), step / 10,
                refresh.last_success_at if refresh else None)).with_value(
                status.SLOT, rng.choice(["ENABLED", "PAUSED", "DISABLED", None]))
        elif change == "findings":
            t = t.with_value(findings.SLOT, tuple(
                (j.job_id, (step, 0, 1)) for j in jobs.jobs_of(t)[:step % 3]))
        elif change == "health":
            t = t.with_health(rng.choice(["findings", "usage", "members"]),
                              Health(step % 2 == 0, step))
        elif change == "usage":
            t = t.with_value(usage.SLOT, (
                Usage(rng.choice([ACCOUNT, MEMBER, t.key.account_id]), "SENSITIVE_DATA_DISCOVERY",
                      "USD", step, step % 2 == 0, 2.0**40),))
        elif change == "rekey":
            t = replace(t, key=TargetKey(f"{step:012d}", t.key.region))
        elif change == "add":
            targets.append(replace(t, key=TargetKey(ACCOUNT, f"region-{step}")))
        if change == "drop" and len(targets) > 1:
            del targets[i]
        else:
            targets[i] = t
    unique = {t.key: t for t in targets}
    return Snapshot(tuple(unique.values()))


@pytest.mark.parametrize("generate", [generate_latest, generate_openmetrics])
@pytest.mark.parametrize("jobs_per_slice", [2, 500])  # 2: the 3-job target is streamed
def test_kept_samples_render_like_a_fresh_render_as_snapshots_change(
        generate: Callable[[CollectorRegistry], bytes], jobs_per_slice: int) -> None:
    holder = Holder()
    fragments = Segments(generate)
    rng = random.Random(7)  # noqa: S311 (a reproducible sequence of changes)
    for step in range(60):
        holder.snapshot = mutated(holder.snapshot, rng, step)
        registry = CollectorRegistry(auto_describe=False)
        registry.register(SnapshotCollector(lambda: holder.snapshot, FAMILIES))
        expected = generate(registry).removesuffix(b"# EOF\n")
        kept = b"".join(render_snapshot(holder.snapshot, FAMILIES, generate, fragments,
                                        jobs_per_slice=jobs_per_slice))
        assert kept == expected, f"step {step}"


@pytest.mark.parametrize("jobs_per_slice", [2, 500])
def test_renders_that_look_only_at_changed_targets_match_a_fresh_render(
        jobs_per_slice: int) -> None:
    """Many chunks, and changes that keep the targets where they are (looked at place by
    place) mixed with changes that move them (rendered whole)."""
    base = snapshot().targets
    current = Snapshot(tuple(replace(base[n % len(base)], key=TargetKey(
        f"{n:012d}", base[n % len(base)].key.region)) for n in range(3 * TARGETS_PER_CHUNK)))
    segments = Segments()
    rng = random.Random(11)  # noqa: S311 (a reproducible sequence of changes)
    for step in range(40):
        current = mutated(current, rng, step)
        rendered = b"".join(render_snapshot(current, FAMILIES, generate_latest, segments,
                                            jobs_per_slice=jobs_per_slice))
        assert rendered == reference(current, FAMILIES, generate_latest), f"step {step}"


def test_a_render_after_one_change_keeps_every_other_chunk_untouched() -> None:
    sized: list[float] = []

    def size(part: float) -> int:
        sized.append(part)
        return 1

    spec = replace(_refresh_seconds_spec(), size=size)
    targets = tuple(TargetResult(TargetKey(ACCOUNT, f"region-{n:03d}")).with_health(
        "jobs", Health(True, float(n))) for n in range(3 * TARGETS_PER_CHUNK))
    segments = Segments()
    b"".join(render_snapshot(Snapshot(targets), [spec], generate_latest, segments))
    before = list(segments._chunks[0])
    sized.clear()
    # A new result with an equal part: every chunk is kept as it is, and no target but that
    # one is looked at (the others are the same result objects).
    place = 2 * TARGETS_PER_CHUNK + 1
    same = targets[place].with_health("jobs", Health(True, float(place)))
    changed = (*targets[:place], same, *targets[place + 1:])
    again = b"".join(render_snapshot(Snapshot(changed), [spec], generate_latest, segments))
    assert all(a is b for a, b in zip(before, segments._chunks[0], strict=True))
    assert sized == []
    # A part that changed: its chunk alone is made again, sizing its own targets only.
    moved = (*changed[:place], same.with_health("jobs", Health(True, 0.5)), *changed[place + 1:])
    after = b"".join(render_snapshot(Snapshot(moved), [spec], generate_latest, segments))
    assert sized[:2] == [0.5, float(place)]  # the new part and the one it replaces
    assert len(sized) == 2 + TARGETS_PER_CHUNK  # then its chunk's
    assert after == reference(Snapshot(moved), [spec], generate_latest) != again
    assert [a is b for a, b in zip(before, segments._chunks[0], strict=True)] == [
        True, True, False]


def test_only_the_targets_that_changed_are_encoded_again() -> None:
    base = snapshot().targets[0]
    targets = tuple(replace(base, key=TargetKey(ACCOUNT, f"region-{n}")) for n in range(50))
    encoded: list[int] = []

    def counting(registry: CollectorRegistry) -> bytes:
        text = generate_latest(registry)
        encoded.append(sum(1 for line in text.splitlines() if not line.startswith(b"#")))
        return text

    fragments = Segments(counting)
    first = b"".join(render_snapshot(Snapshot(targets), FAMILIES, counting, fragments))
    everything = sum(encoded)
    assert everything == first.count(b"\n") - first.count(b"\n#") - first.startswith(b"#")
    encoded.clear()
    refreshed = targets[7].with_health("jobs", Health(True, 9.5, 1_795_000_200.0))
    changed = Snapshot((*targets[:7], refreshed, *targets[8:]))
    again = b"".join(render_snapshot(changed, FAMILIES, counting, fragments))
    # Two samples changed (duration and last success) and are all that is encoded again.
    assert sum(encoded) == 2
    assert again == b"".join(render_snapshot(changed, FAMILIES, generate_latest)) != first


def test_a_target_with_more_jobs_than_a_batch_is_streamed_not_kept() -> None:
    small, big = snapshot().targets[0], snapshot().targets[0]
    value = big.get(jobs.SLOT)
    assert value is not None
    big = replace(big, key=TargetKey(ACCOUNT, "us-west-2")).with_value(jobs.SLOT, replace(
        value, jobs=tuple(replace(value.jobs[0], job_id=f"job-{n:03d}") for n in range(7))))
    snap = Snapshot((small, big))
    fragments = Segments()
    for _ in range(2):
        rendered = b"".join(render_snapshot(snap, FAMILIES, generate_latest, fragments,
                                            jobs_per_slice=3))
        assert rendered == b"".join(render_snapshot(snap, FAMILIES, generate_latest))
    info = fragments._chunks[0]  # macie_classification_job_info
    assert [key for chunk in info for key in chunk.keys] == [small.key]


def test_an_empty_snapshot_renders_like_prometheus_client() -> None:
    holder = Holder()
    holder.snapshot = Snapshot()
    assert holder.exposition.render(None, None)[1] == generate_latest(holder.reference())


def _refresh_seconds_spec() -> FamilySpec[float]:
    """A counter per target, from a one-line part function (its refresh's duration)."""
    def make() -> CounterFamily:
        return CounterFamily("test_refresh_seconds", "Seconds spent refreshing the target.",
                             labels=list(TARGET_LABELS))

    def part(target: TargetResult) -> float:
        health = target.health_of("jobs")
        return health.duration_seconds if health is not None else 0.0

    def add(family: Family, key: TargetKey, seconds: float, lo: int, hi: int) -> None:
        family.add_metric([key.account_id, key.region], seconds)

    return FamilySpec("test_refresh_seconds", make, add, part=part)


def reference(snap: Snapshot, families: Sequence[AnySpec],
              generate: Callable[[CollectorRegistry], bytes]) -> bytes:
    """prometheus-client's own rendering of `families` over `snap` (no `# EOF`)."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(SnapshotCollector(lambda: snap, families))
    return generate(registry).removesuffix(b"# EOF\n")


@pytest.mark.parametrize("generate", [generate_latest, generate_openmetrics])
def test_a_counter_family_is_kept_and_renders_like_prometheus_client(
        generate: Callable[[CollectorRegistry], bytes]) -> None:
    spec = _refresh_seconds_spec()
    assert spec.kind == "counter"
    targets = tuple(TargetResult(TargetKey(ACCOUNT, f"region-{n}")).with_health(
        "jobs", Health(True, float(n))) for n in range(5))
    fragments = Segments(generate)
    before = Snapshot(targets)
    first = b"".join(render_snapshot(before, [spec], generate, fragments))
    assert first == reference(before, [spec], generate)
    assert b"_created" not in first and first.count(b"test_refresh_seconds_total{") == 5
    changed = targets[2].with_health("jobs", Health(True, 42.0))
    after = Snapshot((*targets[:2], changed, *targets[3:]))
    again = b"".join(render_snapshot(after, [spec], generate, fragments))
    assert again == reference(after, [spec], generate) != first
    assert b"_created" not in again and b"42.0" in again
    [chunk] = fragments._chunks[0]
    assert list(chunk.parts) == [0.0, 1.0, 42.0, 3.0, 4.0]


def test_only_the_chunks_holding_a_changed_target_are_compressed_again() -> None:
    spec = _refresh_seconds_spec()
    count = 3 * TARGETS_PER_CHUNK + 5
    targets = tuple(TargetResult(TargetKey(ACCOUNT, f"region-{n:03d}")).with_health(
        "jobs", Health(True, float(n))) for n in range(count))
    segments = Segments()
    b"".join(render_snapshot(Snapshot(targets), [spec], generate_latest, segments))
    before = list(segments._chunks[0])
    assert [len(c.keys) for c in before] == [TARGETS_PER_CHUNK] * 3 + [5]
    moved = TARGETS_PER_CHUNK + 3  # in the second chunk
    changed = (*targets[:moved], targets[moved].with_health("jobs", Health(True, 0.5)),
               *targets[moved + 1:])
    again = b"".join(render_snapshot(Snapshot(changed), [spec], generate_latest, segments))
    assert again == reference(Snapshot(changed), [spec], generate_latest)
    after = segments._chunks[0]
    assert [a is b for a, b in zip(before, after, strict=True)] == [True, False, True, True]
    # A target added in front shifts every chunk: each is rebuilt from the old ones' samples.
    added = (TargetResult(TargetKey(ACCOUNT, "region-000a")), *changed)
    shifted = b"".join(render_snapshot(Snapshot(added), [spec], generate_latest, segments))
    assert shifted == reference(Snapshot(added), [spec], generate_latest)


def test_a_family_that_may_carry_created_samples_is_refused_where_it_is_declared() -> None:
    def add(family: Family, key: TargetKey, count: float, lo: int, hi: int) -> None:
        family.add_metric([key.account_id, key.region], count)

    with pytest.raises(TypeError, match="CounterMetricFamily"):
        FamilySpec("test_refreshes", lambda: CounterMetricFamily(  # type: ignore[arg-type,return-value]
            "test_refreshes", "Refreshes of the target.", labels=list(TARGET_LABELS)),
            add, part=lambda target: 1.0)


class GatedRender:
    """render_snapshot that fails on demand and, in the background renderer, records each
    snapshot it renders and blocks while the gate is closed."""

    def __init__(self) -> None:
        self.gate = threading.Event()
        self.gate.set()
        self.rendered: list[Snapshot] = []
        self.fail = False
        self.seconds = 0.0  # what each render costs on a fake clock
        self.clock = [0.0]

    def last(self) -> Snapshot | None:
        return self.rendered[-1] if self.rendered else None

    def __call__(self, snapshot: Snapshot, families: Sequence[AnySpec],
                 fragments: Segments) -> Iterator[_Segment]:
        if self.fail:
            raise RuntimeError("render failed")
        if threading.current_thread().name != "exposition-render":
            # a render on the scrape path
            return render_samples(snapshot, families, fragments)
        self.rendered.append(snapshot)
        assert self.gate.wait(timeout=15), "test never opened the gate"
        self.clock[0] += self.seconds
        return render_samples(snapshot, families, fragments)


class Background(Holder):
    """A CachedExposition with its background renderer running, over a gated render."""

    def __init__(self, min_gap: float = 0.0, gap_full_at: int = 1) -> None:
        super().__init__()
        self.render = GatedRender()
        self.rests: list[float] = []
        self.published: list[Snapshot | None] = []
        self.exposition = CachedExposition(lambda: self.snapshot, FAMILIES, [self.live],
                                           render=self.render, clock=lambda: self.render.clock[0],
                                           render_clock=lambda: self.render.clock[0],
                                           rest=self.rests.append, min_gap=min_gap,
                                           gap_full_at=gap_full_at,
                                           published=self.published.append)

    def put(self, new: Snapshot) -> None:
        self.snapshot = new
        self.exposition.snapshot_changed()

    def scrape_without_waiting(self, accept: str | None = None) -> bytes:
        """A scrape that must answer while a render may be blocked."""
        result: list[bytes] = []
        thread = threading.Thread(
            target=lambda: result.append(self.exposition.render(accept, "gzip")[1]))
        thread.start()
        thread.join(timeout=10)
        assert not thread.is_alive(), "the scrape waited for the background render"
        return gzip.decompress(result[0])


@pytest.fixture
def background() -> Iterator[Background]:
    holder = Background()
    holder.exposition.start()
    yield holder
    holder.render.gate.set()
    holder.exposition.stop()


def test_a_scrape_serves_the_last_published_snapshot_while_a_render_runs(
        background: Background) -> None:
    first = background.snapshot
    before = background.scrape_without_waiting()  # the first ask for a format renders it
    assert before == generate_latest(background.reference())
    background.render.gate.clear()
    background.put(Snapshot(first.targets[1:]))
    wait_for(lambda: background.render.last() is background.snapshot,
             what="the background render to begin")
    assert background.scrape_without_waiting() == before
    assert background.exposition.served() is first
    background.render.gate.set()
    wait_for(lambda: background.exposition.served() is background.snapshot,
             what="the new snapshot to be published")
    after = background.scrape_without_waiting()
    assert after == generate_latest(background.reference()) != before


def test_swaps_during_a_render_are_coalesced_into_one_render_of_the_newest(
        background: Background) -> None:
    background.scrape_without_waiting()
    background.render.gate.clear()
    background.put(Snapshot(background.snapshot.targets[1:]))
    wait_for(lambda: len(background.render.rendered) == 1, what="the first render to begin")
    intermediate = [Snapshot(background.snapshot.targets) for _ in range(3)]
    for newer in intermediate:
        background.put(newer)
    background.render.gate.set()
    wait_for(lambda: background.exposition.served() is intermediate[-1],
             what="the newest snapshot to be published")
    assert len(background.render.rendered) == 2
    assert background.render.rendered[1] is intermediate[-1]


def test_one_render_serves_every_format(background: Background) -> None:
    background.scrape_without_waiting()
    background.render.gate.clear()
    background.put(Snapshot(background.snapshot.targets[1:]))
    wait_for(lambda: background.render.last() is background.snapshot)
    background.render.gate.set()
    wait_for(lambda: background.exposition.served() is background.snapshot)
    renders = len(background.render.rendered)
    assert background.scrape_without_waiting(PROMETHEUS_ACCEPT) == openmetrics(
        background.reference())
    assert background.scrape_without_waiting() == generate_latest(background.reference())
    assert len(background.render.rendered) == renders


def test_a_snapshot_is_not_rendered_while_nobody_scrapes() -> None:
    holder = Background()
    holder.exposition.start()
    try:
        holder.scrape_without_waiting()
        holder.render.clock[0] = CachedExposition.SCRAPE_TTL + 1  # no scrape since
        renders = len(holder.render.rendered)
        holder.put(Snapshot(holder.snapshot.targets[1:]))
        wait_for(lambda: holder.exposition.served() is holder.snapshot)
        assert len(holder.render.rendered) == renders
        # The next scrape renders it (on the scrape path), in whatever format it asks for.
        assert holder.scrape_without_waiting(PROMETHEUS_ACCEPT) == openmetrics(
            holder.reference())
    finally:
        holder.exposition.stop()


def _completed(snapshot: Snapshot, done: bool = True) -> Snapshot:
    """The snapshot with every target's first refresh finished (or, done=False, not yet)."""
    return Snapshot(tuple(replace(t, completed=done) for t in snapshot.targets))


@contextlib.contextmanager
def _started_pending() -> Iterator[tuple[Background, Snapshot]]:
    """A started Background whose first publication has no target refreshed yet."""
    holder = Background()
    pending = holder.snapshot = _completed(holder.snapshot, done=False)
    assert not holder.exposition.readying()  # no background renderer: nothing to wait for
    holder.exposition.start()
    try:
        wait_for(lambda: holder.published == [pending], what="the first publication")
        yield holder, pending
    finally:
        holder.render.gate.set()
        holder.exposition.stop()
    assert not holder.exposition.readying()


def test_the_snapshot_that_makes_the_exporter_ready_is_rendered_though_nobody_scraped() -> None:
    with _started_pending() as (holder, pending):
        assert holder.render.rendered == []  # nobody scraped: nothing rendered
        ready = _completed(pending)
        holder.put(ready)
        wait_for(lambda: holder.published[-1] is ready, what="the ready snapshot published")
        assert holder.render.rendered == [ready]  # rendered before /readyz turns 200
        later = Snapshot(ready.targets[1:])
        holder.put(later)  # still nobody scraped: the TTL rule again
        wait_for(lambda: holder.published[-1] is later, what="the next snapshot published")
        assert holder.render.rendered == [ready]
        # The scrape renders it on the scrape path.
        assert holder.scrape_without_waiting() == generate_latest(holder.reference())
        assert holder.render.rendered == [ready]


def test_after_a_failed_render_scrapes_render_and_fail_until_a_render_succeeds(
        background: Background, caplog: pytest.LogCaptureFixture) -> None:
    background.scrape_without_waiting()
    background.render.fail = True
    background.put(Snapshot(background.snapshot.targets[1:]))
    wait_for(lambda: "rendering the exposition failed" in caplog.text)
    assert background.exposition.served() is background.snapshot  # /readyz follows the store
    with pytest.raises(RuntimeError, match="render failed"):  # never stale data in silence
        background.exposition.render(None, "gzip")
    background.render.fail = False
    _, body = background.exposition.render(None, "gzip")
    assert gzip.decompress(body) == generate_latest(background.reference())
    background.put(Snapshot(background.snapshot.targets[2:]))  # the renderer takes over again
    wait_for(lambda: background.render.last() is background.snapshot)
    assert background.scrape_without_waiting() == generate_latest(background.reference())


def test_another_format_is_served_from_the_last_render_while_a_render_runs(
        background: Background) -> None:
    background.scrape_without_waiting()
    background.render.gate.clear()
    background.put(Snapshot(background.snapshot.targets[1:]))
    wait_for(lambda: background.render.last() is background.snapshot)
    old = Holder()
    old.snapshot = background.exposition.served()
    assert background.scrape_without_waiting(PROMETHEUS_ACCEPT) == openmetrics(old.reference())


ACCEPT_VARIANTS = [f"application/openmetrics-text;version=1.0.{n}" for n in range(20)] + [
    "application/openmetrics-text; version=abc", "application/openmetrics-text;version=0.0.1",
    "application/openmetrics-text;version=1.0.0;escaping=allow-utf-8",
    "application/openmetrics-text;version=1.0.0;escaping=dots",
    "text/plain;version=1.0.0;escaping=values", "text/plain;version=9", "*/*", "",
    "application/json", ";;;,,,", "text/plain;q=abc", "application/openmetrics-text;q=0",
]


def test_accept_variants_cost_no_render(background: Background) -> None:
    background.scrape_without_waiting()
    wait_for(lambda: background.exposition._published.rendered is not None)
    renders = len(background.render.rendered)
    for accept in ACCEPT_VARIANTS:
        encoder = openmetrics if negotiate(accept).kind == "openmetrics" else generate_latest
        assert background.scrape_without_waiting(accept) == encoder(background.reference())
    assert len(background.render.rendered) == renders
    assert len({negotiate(accept) for accept in ACCEPT_VARIANTS}) <= 6


def test_the_renderer_rests_as_long_as_each_render_took(background: Background) -> None:
    background.scrape_without_waiting()
    background.render.seconds = 3.0
    background.put(Snapshot(background.snapshot.targets[1:]))
    wait_for(lambda: background.exposition.served() is background.snapshot)
    wait_for(lambda: background.rests and background.rests[-1] == 3.0,
             what="a rest as long as the render")


@pytest.mark.parametrize(("seconds", "rest"), [(1.0, 7.0), (40.0, 40.0)])
def test_renders_begin_at_least_the_gap_apart(seconds: float, rest: float) -> None:
    holder = Background(min_gap=8.0)
    holder.exposition.start()
    try:
        holder.scrape_without_waiting()
        holder.render.seconds = seconds
        holder.put(Snapshot(holder.snapshot.targets[1:]))
        wait_for(lambda: holder.exposition.served() is holder.snapshot)
        # The gap less the render's own time; a render longer than the gap rests as long.
        wait_for(lambda: holder.rests and holder.rests[-1] == rest, what="the rest")
    finally:
        holder.exposition.stop()


@pytest.mark.parametrize(("full_at", "rest"), [(1, 7.5), (2, 3.5), (4, 1.5)])
def test_the_gap_is_in_proportion_to_the_targets_below_its_full_size(full_at: int,
                                                                      rest: float) -> None:
    targets = len(snapshot().targets) - 1  # after the put below
    holder = Background(min_gap=8.0, gap_full_at=full_at * targets)
    holder.exposition.start()
    try:
        holder.scrape_without_waiting()
        holder.render.seconds = 0.5
        holder.put(Snapshot(holder.snapshot.targets[1:]))
        wait_for(lambda: holder.exposition.served() is holder.snapshot)
        # The whole gap (8 s) from `targets` on; at half that size half of it, at a quarter a
        # quarter; less the render's 0.5 s.
        wait_for(lambda: holder.rests and holder.rests[-1] == rest, what="the rest")
    finally:
        holder.exposition.stop()


def test_the_gap_between_renders_does_not_hold_back_readiness() -> None:
    holder = Holder()
    pending = holder.snapshot = _completed(holder.snapshot, done=False)
    exposition = CachedExposition(lambda: holder.snapshot, FAMILIES, [holder.live],
                                  settle=0.05, max_delay=60, min_gap=600)
    exposition.render(None, "gzip")
    exposition.start()
    try:
        wait_for(lambda: exposition.served() is pending, what="the first render")
        holder.snapshot = Snapshot(pending.targets[1:])  # not ready yet: waits for the gap
        exposition.snapshot_changed()
        ready = _completed(pending)
        holder.snapshot = ready
        exposition.snapshot_changed()
        wait_for(lambda: exposition.served() is ready, what="the ready snapshot served")
    finally:
        exposition.stop()


def test_a_burst_of_swaps_is_rendered_once_it_pauses() -> None:
    holder = Holder()
    renders: list[Snapshot] = []

    def counting(snapshot: Snapshot, families: Sequence[AnySpec],
                 fragments: Segments) -> Iterator[_Segment]:
        if threading.current_thread().name == "exposition-render":
            renders.append(snapshot)
        return render_samples(snapshot, families, fragments)

    exposition = CachedExposition(lambda: holder.snapshot, FAMILIES, [holder.live], render=counting,
                                  settle=0.5, max_delay=10)
    exposition.render(None, "gzip")  # asks for the text format, so the renderer renders it
    exposition.start()
    try:
        first = len(renders)
        snapshots = [Snapshot(holder.snapshot.targets[:1]) for _ in range(10)]
        for snapshot in snapshots:  # ten swaps, 20 ms apart: well inside the settle time
            holder.snapshot = snapshot
            exposition.snapshot_changed()
            time.sleep(0.02)
        wait_for(lambda: exposition.served() is snapshots[-1], what="the last swap served")
        assert len(renders) - first < 5  # without settling: one render per swap
    finally:
        exposition.stop()


def test_each_published_snapshot_is_announced_and_a_stop_too() -> None:
    holder = Background()
    holder.exposition.start()
    try:
        wait_for(lambda: holder.published == [holder.snapshot], what="the first publication")
        holder.scrape_without_waiting()  # asks for a format, so the renderer renders it
        holder.render.gate.clear()
        newer = Snapshot(holder.snapshot.targets[1:])
        holder.put(newer)
        wait_for(lambda: holder.render.last() is newer, what="the render of the newer snapshot")
        assert holder.published[-1] is not newer  # not announced before it is served
        holder.render.gate.set()
        wait_for(lambda: holder.published[-1] is newer, what="the newer snapshot's publication")
        assert holder.exposition.served() is newer
    finally:
        holder.render.gate.set()
        holder.exposition.stop()
    assert holder.published[-1] is None


def test_readying_holds_from_the_ready_snapshot_until_it_is_published() -> None:
    with _started_pending() as (holder, pending):
        holder.scrape_without_waiting()  # asks for a format, so the renderer renders it
        assert not holder.exposition.readying()  # not every target refreshed yet
        holder.render.gate.clear()
        ready = _completed(pending)
        holder.put(ready)
        wait_for(lambda: holder.render.last() is ready, what="the render of the ready snapshot")
        assert holder.exposition.readying()  # rendering it: the pool pauses background calls
        holder.render.gate.set()
        wait_for(lambda: holder.published[-1] is ready, what="the ready snapshot published")
        assert not holder.exposition.readying()


def test_a_stopped_renderer_holds_nothing_back() -> None:
    with _started_pending() as (holder, pending):
        holder.scrape_without_waiting()
        holder.render.gate.clear()
        ready = _completed(pending)
        holder.put(ready)
        wait_for(lambda: holder.render.last() is ready, what="the render of the ready snapshot")
        assert holder.exposition.readying()
        holder.exposition.stop()  # mid-render: that render will never be waited for
        assert not holder.exposition.readying()


def test_the_snapshot_that_makes_the_exporter_ready_is_not_held_back_by_swaps() -> None:
    holder = Holder()
    pending = holder.snapshot = _completed(holder.snapshot, done=False)
    exposition = CachedExposition(lambda: holder.snapshot, FAMILIES, [holder.live],
                                  settle=1.0, max_delay=60)
    exposition.start()
    stop = threading.Event()

    def swap_forever() -> None:  # collectors swapping every 0.2 s: the swaps never pause
        while not stop.wait(0.2):
            holder.snapshot = replace(holder.snapshot)
            exposition.snapshot_changed()

    swapper = threading.Thread(target=swap_forever, daemon=True)
    try:
        wait_for(lambda: exposition.served() is pending, what="the first publication")
        swapper.start()
        # Every target has finished its first refresh.
        holder.snapshot = _completed(pending)
        exposition.snapshot_changed()
        wait_for(lambda: exposition.served().ready, timeout=10, what="a ready snapshot served")
    finally:
        stop.set()
        swapper.join(5)
        exposition.stop()


@pytest.mark.parametrize(("accept", "content_type"), [
    (None, "text/plain; version=0.0.4; charset=utf-8"),
    ("application/openmetrics-text; version=abc", "text/plain; version=0.0.4; charset=utf-8"),
    ("application/openmetrics-text;version=1.0.7,text/plain;version=0.0.4",
     "text/plain; version=0.0.4; charset=utf-8"),
    ("application/openmetrics-text",
     "application/openmetrics-text; version=1.0.0; charset=utf-8"),
    ("application/openmetrics-text;version=0.0.1",
     "application/openmetrics-text; version=0.0.1; charset=utf-8; escaping=underscores"),
    ("Application/OpenMetrics-Text; version=1.0.0; escaping=dots",
     "application/openmetrics-text; version=1.0.0; charset=utf-8; escaping=underscores"),
    ("text/plain;q=0.5,application/openmetrics-text;version=1.0.0;q=0.9",
     "application/openmetrics-text; version=1.0.0; charset=utf-8; escaping=underscores"),
    ("application/openmetrics-text;version=1.0.0;q=0,text/plain",
     "text/plain; version=0.0.4; charset=utf-8"),
    ("text/plain;version=1.0.0;escaping=allow-utf-8",
     "text/plain; version=1.0.0; charset=utf-8; escaping=allow-utf-8"),
    ("text/plain;version=2.0.0", "text/plain; version=0.0.4; charset=utf-8"),
    ("*/*;q=0.1", "text/plain; version=0.0.4; charset=utf-8"),
])
def test_negotiation_answers_a_known_format_for_any_header(accept: str | None,
                                                           content_type: str) -> None:
    assert negotiate(accept).content_type == content_type


def filtered_reference(holder: Holder, names: list[str],
                       generate: Callable[[CollectorRegistry], bytes]) -> bytes:
    """prometheus-client's `name[]` filter, collector by collector in the exporter's order
    (its restricted registry visits collectors in no set order)."""
    pieces = []
    for collector in (SnapshotCollector(lambda: holder.snapshot, FAMILIES), holder.live):
        registry = CollectorRegistry(auto_describe=False, support_collectors_without_names=True)
        registry.register(collector)
        restricted: Any = registry.restricted_registry(names)  # a registry by duck typing
        pieces.append(generate(restricted).removesuffix(b"# EOF\n"))
    return b"".join(pieces) + (b"# EOF\n" if generate is openmetrics else b"")


NAME_SETS = [
    ["macie_exporter_build_info"], ["macie_classification_job_status"], [], ["nope"],
    ["macie_exporter_api_requests_total", "macie_classification_job_status",
     "macie_exporter_refresh_success"],
    ["macie_exporter_api_requests"],  # a family name, not a sample name: nothing
    ["macie_usage_quota_bytes", "macie_exporter_collector_success", "macie_status"],
]


@pytest.mark.parametrize("generate", [generate_latest, openmetrics])
@pytest.mark.parametrize("names", NAME_SETS)
def test_name_filters_give_prometheus_client_bytes_from_the_kept_render(
        generate: Callable[[CollectorRegistry], bytes], names: list[str]) -> None:
    holder = Holder()
    holder.requests.inc(TargetKey(ACCOUNT, "eu-west-1"), "ListClassificationJobs", "success")
    accept = None if generate is generate_latest else PROMETHEUS_ACCEPT
    holder.exposition.render(accept, "gzip")
    rendered = holder.exposition._published.rendered
    _, body = holder.exposition.render(accept, None, names)
    assert body == filtered_reference(holder, names, generate)
    _, compressed = holder.exposition.render(accept, "gzip", names)
    assert single_gzip_member(compressed) == body
    assert holder.exposition._published.rendered is rendered  # nothing rendered again


def test_segments_join_into_one_gzip_member_with_the_right_crc() -> None:
    rng = random.Random(5)  # noqa: S311 (reproducible data)
    parts = [bytes(rng.randrange(256) for _ in range(rng.choice([0, 1, 7, 300, 70_000])))
             for _ in range(12)]
    segments = [_segment([part[:len(part) // 2], part[len(part) // 2:]]) for part in parts]
    for chosen in ([0, 1, 2], [11, 3, 3, 0], list(range(12)), []):
        joined = _join(segments[i] for i in chosen)
        expected = b"".join(parts[i] for i in chosen)
        assert joined.crc == zlib.crc32(expected) and joined.length == len(expected)
        assert joined.inflate() == expected


def test_a_render_makes_parts_again_only_for_the_targets_whose_result_changed() -> None:
    made: list[TargetKey] = []
    base = _refresh_seconds_spec()

    def part(target: TargetResult) -> float:
        made.append(target.key)
        assert base.part is not None
        return float(base.part(target))

    spec = replace(base, part=part)
    targets = tuple(TargetResult(TargetKey(ACCOUNT, f"region-{n:03d}")).with_health(
        "jobs", Health(True, float(n))) for n in range(100))
    segments = Segments()
    b"".join(render_snapshot(Snapshot(targets), [spec], generate_latest, segments))
    assert len(made) == 100
    made.clear()
    changed = (*targets[:40], targets[40].with_health("jobs", Health(True, 0.25)), *targets[41:])
    again = b"".join(render_snapshot(Snapshot(changed), [spec], generate_latest, segments))
    assert made == [targets[40].key]
    assert again == reference(Snapshot(changed), [spec], generate_latest)
    made.clear()
    first = segments.family(0, spec, Snapshot(changed), 500)
    assert made == [] and segments.family(0, spec, Snapshot(changed), 500) is first


def test_families_sharing_their_all_parts_make_them_once_a_render() -> None:
    calls: list[Snapshot] = []
    base = _refresh_seconds_spec()

    def shown(snap: Snapshot) -> list[tuple[TargetKey, float]]:
        calls.append(snap)
        return [(t.key, float(n)) for n, t in enumerate(snap.targets)]

    specs = [replace(base, part=None, all_parts=shown),
             replace(base, name="test_other_seconds", part=None, all_parts=shown,
                     make=lambda: CounterFamily("test_other_seconds", "Other seconds.",
                                                labels=list(TARGET_LABELS)))]
    snap = Snapshot(tuple(TargetResult(TargetKey(ACCOUNT, f"region-{n}")) for n in range(3)))
    rendered = b"".join(render_snapshot(snap, specs, generate_latest, Segments()))
    assert calls == [snap]
    assert rendered == reference(snap, specs, generate_latest)
