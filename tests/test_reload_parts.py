"""The parts a reload changes in place, each on its own: the exposition's families, the call
pool's size and rate, the AWS clients' settings."""

from __future__ import annotations

import functools
import threading
from collections.abc import Sequence

from prometheus_client import generate_latest
from prometheus_client.registry import CollectorRegistry

from exporter.aws.counting import ApiRequestCounter
from exporter.aws.session import Aws, AwsSettings
from exporter.collectors.base import Settings
from exporter.engine.pool import CallPool
from exporter.engine.selfmetrics import SnapshotCollector, snapshot_families
from exporter.render.exposition import CachedExposition
from exporter.render.families import AnySpec
from tests import test_exposition
from tests.conftest import wait_for
from tests.snapshots import snapshot
from tests.test_exposition import Background

# The running background renderer over a gated render, as the exposition tests use it.
background = test_exposition.background

TAGGED = snapshot_families(Settings(tag_keys=("team", "cost-center")))
PLAIN = snapshot_families(Settings(), {"status", "jobs"})  # no tags, no other collector


def reference(families: Sequence[AnySpec]) -> bytes:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(SnapshotCollector(snapshot, families))
    return generate_latest(registry)


def test_new_families_are_rendered_from_the_next_scrape() -> None:
    held = snapshot()
    exposition = CachedExposition(lambda: held, TAGGED, [])
    assert exposition.render(None, None)[1] == reference(TAGGED)
    exposition.set_families(PLAIN)
    body = exposition.render(None, None)[1]
    assert body == reference(PLAIN)
    assert b"macie_classification_job_tags" not in body
    assert b"macie_classification_job_findings" not in body
    # name[] reads the new layout too.
    only = exposition.render(None, None, ["macie_classification_job_info"])[1]
    assert only.startswith(b"# HELP macie_classification_job_info ")
    assert exposition.render(None, None, ["macie_classification_job_tags"])[1] == b""


def test_until_the_new_families_are_rendered_scrapes_get_the_last_rendering_whole(
        background: Background) -> None:
    before = background.scrape_without_waiting()
    assert before == generate_latest(background.reference())
    background.render.gate.clear()
    background.exposition.set_families(PLAIN)
    wait_for(lambda: len(background.render.rendered) >= 1, what="the render to begin")
    assert background.scrape_without_waiting() == before  # same snapshot, old families
    for name in (["macie_classification_job_tags"], ["macie_exporter_build_info"]):
        assert background.exposition.render(None, None, name)[1]  # old layout, consistently
    background.render.gate.set()
    wait_for(lambda: b"macie_classification_job_tags" not in
             background.scrape_without_waiting(), what="the new families served")
    registry = CollectorRegistry(auto_describe=False)
    registry.register(SnapshotCollector(lambda: background.snapshot, PLAIN))
    registry.register(background.live)
    assert background.scrape_without_waiting() == generate_latest(registry)


def workers(pool: CallPool) -> int:
    return sum(t.name.startswith("aws-call-") and t.is_alive() for t in threading.enumerate()
               if t in pool._threads)


def test_the_pool_grows_at_once_and_shrinks_as_its_workers_finish() -> None:
    pool = CallPool(2)
    pool.start()
    try:
        assert workers(pool) == 2
        pool.resize(5)
        assert workers(pool) == 5 and pool.workers == 5
        gate, started = threading.Event(), threading.Semaphore(0)

        def held() -> None:
            started.release()
            assert gate.wait(10)

        for owner in range(5):  # five calls under way at once: five workers
            pool.submit(owner, held)
        for _ in range(5):
            assert started.acquire(timeout=10)
        pool.resize(1)
        assert len(pool._threads) == 5  # busy workers finish their call first
        gate.set()
        wait_for(lambda: len(pool._threads) == 1, what="the surplus workers to end")
        done = threading.Event()
        pool.submit("after", done.set)
        assert done.wait(10)
    finally:
        pool.stop()


def test_a_new_rate_applies_to_calls_waiting_for_a_token() -> None:
    frozen = [0.0]  # a clock that never moves: a call that waits for a token waits for good
    pool = CallPool(1, rate=1.0, clock=lambda: frozen[0])
    pool.start()
    try:
        ran: list[int] = []
        done = threading.Event()
        def call(number: int) -> None:
            ran.append(number)
            if number == 2:
                done.set()

        for number in range(3):
            pool.submit("target", functools.partial(call, number))
        wait_for(lambda: ran == [0] and pool._deferred, what="a call waiting for a token")
        pool.set_rate(0)  # no limit: the waiting calls go
        assert done.wait(10)
        assert ran == [0, 1, 2]
    finally:
        pool.stop()


def test_new_aws_settings_make_new_clients_and_keep_credentials() -> None:
    old = AwsSettings("http://127.0.0.1:1", "standard", 3, 1, 2,
                      static_credentials=("AKIATESTEXAMPLE00001", "secret"))
    aws = Aws(old, ApiRequestCounter())
    client = aws.client("macie2", "eu-west-1")
    credentials = aws.default_credentials()
    assert aws.client("macie2", "eu-west-1") is client
    aws.reconfigure(old)  # the same settings: the same clients
    assert aws.client("macie2", "eu-west-1") is client
    new = AwsSettings("http://127.0.0.1:2", "adaptive", 7, 1, 9, max_pool_connections=34,
                      static_credentials=old.static_credentials)
    aws.reconfigure(new)
    fresh = aws.client("macie2", "eu-west-1")
    assert fresh is not client
    assert fresh.meta.endpoint_url == "http://127.0.0.1:2"
    assert fresh.meta.config.read_timeout == 9
    assert fresh.meta.config.max_pool_connections == 34
    assert fresh.meta.config.retries == {"mode": "adaptive", "total_max_attempts": 7}
    assert aws.default_credentials() == credentials
