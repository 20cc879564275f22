"""Thread-safe live counters keyed by target: the base, and the AWS layer's request counts."""

from __future__ import annotations

import threading
from collections.abc import Hashable
from typing import Generic, TypeVar

from exporter.model import TargetKey

K = TypeVar("K", bound=Hashable)


class TargetCounter(Generic[K]):
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._values: dict[K, float] = {}
        self._gone: set[TargetKey] = set()  # removed targets: a late call counts nothing

    def _target(self, key: K) -> TargetKey:
        return key if isinstance(key, TargetKey) else key[0]  # type: ignore[index]

    def _add(self, key: K, amount: float) -> None:
        with self._lock:
            if self._target(key) in self._gone:
                return
            self._values[key] = self._values.get(key, 0) + amount

    def forget(self, target: TargetKey) -> None:
        """Drop a removed target's figures (its series disappear) and ignore late ones."""
        with self._lock:
            self._gone.add(target)
            for key in [k for k in self._values if self._target(k) == target]:
                del self._values[key]

    def revive(self, target: TargetKey) -> None:
        """Count a target again (added back)."""
        with self._lock:
            self._gone.discard(target)

    def _items(self) -> list[tuple[K, float]]:
        with self._lock:
            return list(self._values.items())


class ApiRequestCounter(TargetCounter[tuple[TargetKey, str, str]]):
    """HTTP attempts to AWS by target, operation and outcome."""

    def inc(self, target: TargetKey, operation: str, outcome: str) -> None:
        self._add((target, operation, outcome), 1)

    def items(self) -> list[tuple[tuple[str, str, str, str], int]]:
        """((account_id, region, operation, outcome), count), sorted."""
        return [((k.account_id, k.region, operation, outcome), count)
                for k, counts in self.by_target() for operation, outcome, count in counts]

    def by_target(self) -> list[tuple[TargetKey, tuple[tuple[str, str, int], ...]]]:
        """Per target, its (operation, outcome, count) triples; both sorted (the order of
        `items`)."""
        grouped: dict[TargetKey, list[tuple[str, str, int]]] = {}
        for (k, operation, outcome), count in self._items():
            grouped.setdefault(k, []).append((operation, outcome, int(count)))
        return [(k, tuple(sorted(counts))) for k, counts in sorted(grouped.items())]

    def rekey(self, old: TargetKey, new: TargetKey) -> None:
        """Move what was counted under `old` to `new` (an account learned late)."""
        with self._lock:
            for key in [k for k in self._values if k[0] == old]:
                moved = (new, key[1], key[2])
                self._values[moved] = self._values.get(moved, 0) + self._values.pop(key)

    def total(self, operation: str | None = None) -> int:
        return int(sum(count for (_, op, _), count in self._items()
                       if operation is None or op == operation))
