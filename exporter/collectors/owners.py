"""Who reports what several targets see: a Macie administrator sees its members' usage,
buckets and automated-discovery status, and members see their own. Each record is shown once
across the whole fleet: by the owner's own target when the fleet polls it (on any shard), else
by the first target that holds a copy (its administrator's)."""

from __future__ import annotations

from collections.abc import Callable, Hashable
from typing import TypeVar

from exporter.model import Snapshot, TargetKey, TargetResult

I = TypeVar("I")  # noqa: E741


def shown_once(snapshot: Snapshot, items: Callable[[TargetResult], tuple[I, ...] | None],
               owner: Callable[[I], str], identity: Callable[[I], Hashable],
               ) -> list[tuple[TargetKey, tuple[I, ...]]]:
    """Each target's items that it shows. `owner(item)` is the account the item belongs to;
    `identity(item)` tells copies of one item apart from other items (within a region).

    A target's own tuple is returned as it is when it shows all of it, so that a renderer that
    keeps encoded samples while a part stays the same object keeps them."""
    polled = snapshot.polled_by_fleet()
    shown: set[tuple[str, Hashable]] = set()  # (region, identity) shown by a target already
    # Owners first: an account's own record wins over any copy of it.
    for target in snapshot.targets:
        for item in items(target) or ():
            if owner(item) == target.key.account_id:
                shown.add((target.key.region, identity(item)))
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
    return out
