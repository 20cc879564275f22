"""The snapshot store: the order its snapshots hold their targets in."""

from __future__ import annotations

import gc
import random

import pytest

from exporter.engine.store import SnapshotStore
from exporter.model import Health, TargetKey, TargetResult, changed_places


def keys(count: int) -> list[TargetKey]:
    return [TargetKey(f"{100000000000 + i}", region)
            for i in range(count) for region in ("eu-west-1", "us-east-1")]


def phase(key: TargetKey) -> float:
    return key.phase


def order_of(store: SnapshotStore) -> list[TargetKey]:
    return [target.key for target in store.get().targets]


def test_without_an_order_targets_stay_in_the_order_they_came() -> None:
    added = keys(20)
    random.Random(1).shuffle(added)  # noqa: S311 (a reproducible order)
    store = SnapshotStore(added[:10])
    for key in added[10:]:
        store.put(TargetResult(key=key))
    assert order_of(store) == added


def test_with_an_order_every_snapshot_holds_its_targets_sorted() -> None:
    added = keys(40)
    random.Random(2).shuffle(added)  # noqa: S311 (a reproducible order)
    store = SnapshotStore(added[:30], order=phase)
    assert order_of(store) == sorted(added[:30], key=phase)
    for key in added[30:]:  # added later: each in its place, not at the end
        store.put(TargetResult(key=key))
    assert order_of(store) == sorted(added, key=phase)
    gone = added[5]
    store.remove(gone)
    assert order_of(store) == sorted((k for k in added if k != gone), key=phase)


def test_a_result_replaced_keeps_its_place_and_the_snapshot_its_order() -> None:
    added = keys(10)
    store = SnapshotStore(added, order=phase)
    before = order_of(store)
    store.update(added[3], lambda r: r.with_health("jobs", Health(True, 1.5)))
    assert order_of(store) == before
    assert store.result(added[3]).health_of("jobs") == Health(True, 1.5)


def test_a_rekeyed_target_moves_to_its_new_key_s_place() -> None:
    added = keys(10)
    store = SnapshotStore(added, order=phase)
    old = added[0]
    new = TargetKey("999999999999", old.region)
    store.rekey(old, new)
    found = order_of(store)
    assert old not in found and new in found
    assert found == sorted(found, key=phase)


def test_the_exporter_freezes_what_it_holds_once_it_is_ready() -> None:
    from exporter.cli import Exporter
    from exporter.config import load

    exporter = Exporter(load(["--aws.regions=eu-west-1,us-east-1",
                              "--aws.endpoint-url=http://127.0.0.1:9"], environ={}))
    held = [target.key for target in exporter.store.get().targets]
    assert len(held) == 2
    gc.unfreeze()
    try:
        exporter.store.put(TargetResult(key=held[0], completed=True))
        assert gc.get_freeze_count() == 0  # one target still to refresh: not ready
        exporter.store.put(TargetResult(key=held[1], completed=True))
        assert exporter.store.ready()
        assert gc.get_freeze_count() > 0
    finally:
        gc.unfreeze()


def test_the_process_collects_young_objects_per_10000_and_full_per_100_middle_ones() -> None:
    from exporter.cli import FULL_COLLECTION_EVERY, YOUNG_COLLECTION_EVERY, main

    before = gc.get_threshold()
    try:
        assert main(["--config.check", "--aws.regions=eu-west-1"]) == 0
        assert gc.get_threshold() == (YOUNG_COLLECTION_EVERY, before[1],
                                      FULL_COLLECTION_EVERY) == (10_000, before[1], 100)
    finally:
        gc.set_threshold(*before)


def test_changed_places_are_the_places_holding_another_object() -> None:
    a, b, c = object(), object(), object()
    old = (a, b, c, a)
    new = (a, c, c, b)
    assert changed_places(old, new) == [1, 3]
    assert changed_places(old, new) is changed_places(old, new)  # the last pair is kept
    assert changed_places(new, new) == []
    assert changed_places((), ()) == []
    assert changed_places([[5]], [[5]]) == [0]  # equal is not the same object
    same = [[5]]
    assert changed_places(same, list(same)) == []
    with pytest.raises(ValueError, match="same length"):
        changed_places(old, new[:2])
