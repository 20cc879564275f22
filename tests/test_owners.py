"""Who shows a record several targets see: `ShownOnce` gives `shown_once`'s answer for every
snapshot, and looks only at the targets that changed while no target holds another's record."""

from __future__ import annotations

import random

from exporter.collectors.owners import ShownOnce, shown_once
from exporter.model import Slot, Snapshot, TargetKey, TargetResult

SLOT: Slot[tuple[tuple[str, str], ...]] = Slot("records")  # (owner account, name)
ACCOUNTS = [f"{n:012d}" for n in range(6)]


def _records(target: TargetResult) -> tuple[tuple[str, str], ...] | None:
    return target.get(SLOT)


def _owner(item: tuple[str, str]) -> str:
    return item[0]


def _identity(item: tuple[str, str]) -> str:
    return item[1]


def _changed(snap: Snapshot, rng: random.Random, step: int) -> Snapshot:
    targets = list(snap.targets)
    for _ in range(rng.randint(0, 3)):
        i = rng.randrange(len(targets))
        target = targets[i]
        own = target.key.account_id
        change = rng.choice(["own", "own", "foreign", "none", "health", "drop", "polled"])
        if change == "own":
            target = target.with_value(SLOT, tuple((own, f"r{step}-{n}")
                                                   for n in range(rng.randint(0, 2))) or None)
        elif change == "foreign":  # an administrator's copy of a member's record
            target = target.with_value(SLOT, ((rng.choice(ACCOUNTS), f"r{step % 3}"),))
        elif change == "health":  # another object, the same records
            target = target.with_health("jobs", None)
        elif change == "drop" and len(targets) > 2:
            del targets[i]
            continue
        elif change == "polled":
            return Snapshot(tuple(targets), polled=frozenset(
                t.key for t in targets if rng.random() < 0.7))
        targets[i] = target
    return Snapshot(tuple(targets), polled=snap.polled)


def test_shown_once_as_snapshots_change_gives_the_answer_worked_out_afresh() -> None:
    rng = random.Random(5)  # noqa: S311 (a reproducible sequence of changes)
    shown = ShownOnce(_records, _owner, _identity)
    snap = Snapshot(tuple(TargetResult(TargetKey(account, region)).with_value(
        SLOT, ((account, f"{account}-{region}"),))
        for account in ACCOUNTS for region in ("eu-west-1", "us-east-1")))
    for step in range(300):
        snap = _changed(snap, rng, step)
        assert shown(snap) == shown_once(snap, _records, _owner, _identity), f"step {step}"
        assert shown(snap) is shown(snap)


def test_only_changed_targets_are_read_while_each_shows_its_own() -> None:
    read: list[TargetKey] = []

    def records(target: TargetResult) -> tuple[tuple[str, str], ...] | None:
        read.append(target.key)
        return target.get(SLOT)

    shown = ShownOnce(records, _owner, _identity)
    targets = tuple(TargetResult(TargetKey(account, "eu-west-1")).with_value(
        SLOT, ((account, "r"),)) for account in ACCOUNTS)
    first = shown(Snapshot(targets))
    read.clear()
    renewed = targets[2].with_health("jobs", None)  # another object, the same records
    again = shown(Snapshot((*targets[:2], renewed, *targets[3:])))
    assert set(read) == {renewed.key} and again is first
    # A record of another account: every target is read again.
    copy = targets[4].with_value(SLOT, ((ACCOUNTS[0], "r"), (ACCOUNTS[4], "r")))
    changed = (*targets[:4], copy, *targets[5:])
    read.clear()
    assert shown(Snapshot(changed)) == shown_once(Snapshot(changed), records, _owner, _identity)
    assert len(read) > len(targets)
    # With that copy held, a target whose records stay the same object is still all that is
    # read (a refresh of the administrator's jobs changes no one's records).
    before = shown(Snapshot(changed))
    read.clear()
    refreshed = copy.with_health("jobs", None)
    assert shown(Snapshot((*changed[:4], refreshed, *changed[5:]))) is before
    assert set(read) == {copy.key}
