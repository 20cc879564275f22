"""The cached scrape path gives prometheus-client's own bytes, in every negotiated format."""

from __future__ import annotations

import gzip
import zlib
from collections.abc import Callable

import pytest
from prometheus_client import generate_latest
from prometheus_client.openmetrics.exposition import generate_latest as generate_openmetrics
from prometheus_client.registry import CollectorRegistry

from exporter.collect import ApiRequestCounter, SelfCollector, SnapshotCollector
from exporter.exposition import CachedExposition, render_snapshot
from exporter.model import Snapshot
from tests.test_collect import ACCOUNT, Target, snapshot

PROMETHEUS_ACCEPT = ("application/openmetrics-text;version=1.0.0,application/openmetrics-text;"
                     "version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1")
TAGS = ("team", "cost-center")


class Holder:
    def __init__(self) -> None:
        self.snapshot = snapshot()
        self.requests = ApiRequestCounter()
        self.live = SelfCollector(self.requests, build=("0.0.0", "3.11.0", "1.0.0"))
        self.exposition = CachedExposition(lambda: self.snapshot, TAGS, [self.live])

    def reference(self) -> CollectorRegistry:
        registry = CollectorRegistry(auto_describe=False)
        registry.register(SnapshotCollector(lambda: self.snapshot, TAGS))
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
    cached = dict(holder.exposition._compressed)
    holder.requests.inc(Target(ACCOUNT, "eu-west-1"), "DescribeClassificationJob", "success")
    _, body = holder.exposition.render(None, "gzip")
    assert holder.exposition._compressed == cached
    assert single_gzip_member(body) == generate_latest(holder.reference())
    assert b'operation="DescribeClassificationJob"' in gzip.decompress(body)


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
    registry.register(SnapshotCollector(lambda: holder.snapshot, TAGS))
    expected = generate(registry).removesuffix(b"# EOF\n")
    pieces = render_snapshot(holder.snapshot, TAGS, generate, jobs_per_slice)
    assert b"".join(pieces) == expected


def test_an_empty_snapshot_renders_like_prometheus_client() -> None:
    holder = Holder()
    holder.snapshot = Snapshot()
    assert holder.exposition.render(None, None)[1] == generate_latest(holder.reference())
