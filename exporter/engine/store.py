"""The snapshot store: each target's result, swapped in as one immutable snapshot."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable
from dataclasses import replace
from typing import Any, Protocol

from exporter.model import Snapshot, TargetKey, TargetResult


class Rekeyable(Protocol):
    """Something keyed by target that follows an account learned late."""

    def rekey(self, old: TargetKey, new: TargetKey) -> None: ...


class SnapshotStore:
    """Holds the current snapshot; replacing one target's result swaps a new snapshot in.

    A snapshot is made when one is asked for (`get`), not at every swap: at 10,200 targets a
    swap would otherwise copy 10,200 results, thousands of times a minute, for a renderer that
    reads a few snapshots a minute. Readiness is counted as results change (`ready`).

    With `order`, a snapshot holds its targets sorted by `order(key)` (the exporter sorts by
    phase: targets that refresh in the same seconds are neighbours, so the few chunks of a
    family that a render must encode again hold them, not nearly every chunk); without it, in
    the order they were added."""

    def __init__(self, keys: Iterable[TargetKey] = (), pending: bool = False,
                 order: Callable[[TargetKey], Any] | None = None) -> None:
        self._lock = threading.Lock()
        self._order = order
        self._unordered = False  # a target was added or rekeyed since the last sort
        self._results: dict[TargetKey, TargetResult] = {k: TargetResult(key=k) for k in keys}
        if order is not None:
            self._sort()
        self._pending = pending
        self._serial = 0
        self._polled: frozenset[TargetKey] | None = None
        self._incomplete = len(self._results)  # results not `completed` yet
        self._snapshot: Snapshot | None = None
        self._listeners: list[Callable[[], None]] = []
        # Actions waiting for /metrics to show a snapshot: (its serial, action).
        self._rendered = False
        self._waiting: list[tuple[int, Callable[[], None]]] = []

    def subscribe(self, listener: Callable[[], None]) -> None:
        """`listener()` is called after every swap (it must return quickly)."""
        self._listeners.append(listener)

    def get(self) -> Snapshot:
        snapshot = self._snapshot
        if snapshot is None:
            with self._lock:
                snapshot = self._snapshot
                if snapshot is None:
                    if self._unordered:
                        self._sort()
                    snapshot = self._snapshot = Snapshot(
                        tuple(self._results.values()), self._pending, self._serial,
                        self._polled, complete=self._incomplete == 0)
        return snapshot

    def _sort(self) -> None:
        """Hold the results in `order` (lock held)."""
        order = self._order
        assert order is not None
        self._results = dict(sorted(self._results.items(), key=lambda item: order(item[0])))
        self._unordered = False

    def ready(self) -> bool:
        """What `get().ready` says, without making a snapshot."""
        return not self._pending and self._incomplete == 0

    def _set(self, key: TargetKey, result: TargetResult | None) -> None:
        """Hold `result` under `key` (None: drop it), counting readiness (lock held)."""
        old = self._results.pop(key, None) if result is None else self._results.get(key)
        if old is not None and not old.completed:
            self._incomplete -= 1
        if result is not None:
            if old is None and self._order is not None:
                self._unordered = True
            self._results[key] = result
            if not result.completed:
                self._incomplete += 1

    def result(self, key: TargetKey) -> TargetResult:
        return self._results.get(key) or TargetResult(key=key)

    def _swap(self) -> None:
        self._serial += 1
        self._snapshot = None

    def polled(self, keys: Iterable[TargetKey] | None) -> None:
        """Every target the whole fleet polls, every shard's (None: only this store's)."""
        with self._lock:
            found = frozenset(keys) if keys is not None else None
            if found == self._polled:
                return
            self._polled = found
            self._swap()
        self._changed()

    def rendered_in_background(self) -> None:
        """From now on a background renderer publishes snapshots to /metrics (and calls
        `published`), so `when_published` waits for it."""
        with self._lock:
            self._rendered = True

    def when_published(self, action: Callable[[], None]) -> None:
        """Run `action` once /metrics shows the current snapshot (or a newer one): at once
        without a background renderer, else from the renderer's thread."""
        with self._lock:
            if self._rendered:
                self._waiting.append((self._serial, action))
                return
        action()

    def published(self, snapshot: Snapshot | None) -> None:
        """The renderer published `snapshot` (None: it stopped, and waits no more)."""
        with self._lock:
            if snapshot is None:
                self._rendered = False
                due, self._waiting = self._waiting, []
            else:
                due = [(s, a) for s, a in self._waiting if s <= snapshot.serial]
                self._waiting = [(s, a) for s, a in self._waiting if s > snapshot.serial]
        for _, action in due:
            action()

    def known(self) -> None:
        """The set of targets is known (discovery answered once, successfully or not)."""
        with self._lock:
            if not self._pending:
                return
            self._pending = False
            self._swap()
        self._changed()

    def update(self, key: TargetKey, change: Callable[[TargetResult], TargetResult]) -> None:
        """Replace a target's result with `change(current)`, atomically; a key the store does
        not hold (a target removed meanwhile) is left alone: only `put` adds targets."""
        with self._lock:
            current = self._results.get(key)
            if current is None:
                return
            self._set(key, change(current))
            self._swap()
        self._changed()

    def put(self, result: TargetResult) -> None:
        """Store a target's result under its key (a target not held yet is added)."""
        with self._lock:
            self._set(result.key, result)
            self._swap()
        self._changed()

    def remove(self, key: TargetKey) -> None:
        with self._lock:
            if key not in self._results:
                return
            self._set(key, None)
            self._swap()
        self._changed()

    def rekey(self, old: TargetKey, new: TargetKey) -> None:
        """Hold `old`'s result under `new`, in the same place (an account learned late)."""
        with self._lock:
            if new in self._results:  # another target has that key: it keeps its place
                if old in self._results:
                    self._set(old, None)
            else:
                self._results = {(new if k == old else k): (replace(r, key=new) if k == old
                                                            else r)
                                 for k, r in self._results.items()}
                self._unordered = self._order is not None  # to its new key's place
            self._swap()
        self._changed()

    def _changed(self) -> None:
        for listener in self._listeners:
            listener()
