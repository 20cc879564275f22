"""Who reports what several targets see: a Macie administrator sees its members' usage,
buckets and automated-discovery status, and members see their own. Each record is shown once
across the whole fleet: by the owner's own target when the fleet polls it (on any shard), else
by the first target that holds a copy (its administrator's)."""

from __future__ import annotations

import threading
from collections.abc import Callable, Hashable
from typing import Generic, TypeVar

from exporter.model import Snapshot, TargetKey, TargetResult, changed_places

I = TypeVar("I")  # noqa: E741


def shown_once(snapshot: Snapshot, items: Callable[[TargetResult], tuple[I, ...] | None],
               owner: Callable[[I], str], identity: Callable[[I], Hashable],
               ) -> list[tuple[TargetKey, tuple[I, ...]]]:
    """Each target's items that it shows. `owner(item)` is the account the item belongs to;
    `identity(item)` tells copies of one item apart from other items (within a region).

    A target's own tuple is returned as it is when it shows all of it, so that a renderer that
    keeps encoded samples while a part stays the same object keeps them."""
    return _shown_once(snapshot, items, owner, identity)[0]


def _shown_once(snapshot: Snapshot, items: Callable[[TargetResult], tuple[I, ...] | None],
                owner: Callable[[I], str], identity: Callable[[I], Hashable],
                ) -> tuple[list[tuple[TargetKey, tuple[I, ...]]], bool]:
    """`shown_once`, and whether a target holds a record of another account."""
    polled = snapshot.polled_by_fleet()
    shown: set[tuple[str, Hashable]] = set()  # (region, identity) shown by a target already
    foreign = False
    # Owners first: an account's own record wins over any copy of it.
    for target in snapshot.targets:
        for item in items(target) or ():
            if owner(item) == target.key.account_id:
                shown.add((target.key.region, identity(item)))
            else:
                foreign = True
    out: list[tuple[TargetKey, tuple[I, ...]]] = []
    for target in snapshot.targets:
        mine = items(target) or ()
        kept = []
        for item in mine:
            account, region = owner(item), target.key.region
            if account == target.key.account_id:
                kept.append(item)
            elif (TargetKey(account, region) not in polled
                  and (region, identity(item)) not in shown):
                shown.add((region, identity(item)))
                kept.append(item)
        out.append((target.key, mine if len(kept) == len(mine) else tuple(kept)))
    return out, foreign


class ShownOnce(Generic[I]):
    """`shown_once` for one kind of record, made again from the last snapshot's answer where
    it can be, so that a render looks at the targets that changed, not at every record of
    every target:

    - a target whose records are the same object as before (a refresh that changed its jobs
      or its health) changes no one's answer;
    - while no target holds a record of another account (no Macie administrator with members
      among the targets), each target shows exactly its own records, so a target whose
      records changed changes its own answer only.

    Anything else (records of another account, targets added, removed or rekeyed, a new set of
    polled targets while copies exist) is worked out afresh."""

    def __init__(self, items: Callable[[TargetResult], tuple[I, ...] | None],
                 owner: Callable[[I], str], identity: Callable[[I], Hashable]) -> None:
        self._items, self._owner, self._identity = items, owner, identity
        self._lock = threading.Lock()
        # The last snapshot, its answer, and whether a target in it held another's record.
        self._last: tuple[Snapshot, list[tuple[TargetKey, tuple[I, ...]]], bool] | None = None

    def __call__(self, snapshot: Snapshot) -> list[tuple[TargetKey, tuple[I, ...]]]:
        with self._lock:
            last = self._last
            if last is not None:
                if last[0] is snapshot:
                    return last[1]
                patched = self._patched(*last, snapshot)
                if patched is not None:
                    self._last = (snapshot, patched, last[2])
                    return patched
            shown, foreign = _shown_once(snapshot, self._items, self._owner, self._identity)
            self._last = (snapshot, shown, foreign)
            return shown

    def _patched(self, old: Snapshot, shown: list[tuple[TargetKey, tuple[I, ...]]],
                 foreign: bool, new: Snapshot) -> list[tuple[TargetKey, tuple[I, ...]]] | None:
        """The answer for `new` from `old`'s; None when it must be worked out afresh."""
        if len(old.targets) != len(new.targets):
            return None
        if foreign and old.polled is not new.polled and old.polled != new.polled:
            return None
        out = None
        olds, news = old.targets, new.targets
        for place in changed_places(olds, news):
            before, after = olds[place], news[place]
            if before.key != after.key:
                return None
            mine = self._items(after) or ()
            if mine is (self._items(before) or ()):
                continue
            account = after.key.account_id
            if foreign or any(self._owner(item) != account for item in mine):
                return None
            if out is None:
                out = list(shown)
            out[place] = (after.key, mine)
        return shown if out is None else out
