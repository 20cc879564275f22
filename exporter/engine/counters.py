"""Live figures of the engine for the self-metrics: rate-limit waits, the fleet's size and
discovery state."""

from __future__ import annotations

from dataclasses import dataclass

from exporter.aws.counting import TargetCounter
from exporter.model import TargetKey


class WaitCounter(TargetCounter[TargetKey]):
    """Seconds spent waiting, by target (the rate limit's waits)."""

    def add(self, target: TargetKey, seconds: float) -> None:
        self._add(target, seconds)

    def items(self) -> list[tuple[tuple[str, str], float]]:
        return sorted(((k.account_id, k.region), v) for k, v in self._items())

    def rekey(self, old: TargetKey, new: TargetKey) -> None:
        with self._lock:
            if old in self._values:
                self._values[new] = self._values.get(new, 0) + self._values.pop(old)


@dataclass
class FleetStatus:
    """Live figures of the fleet for the self-metrics (plain attributes, set by one thread)."""

    targets: int = 0
    discovery_enabled: bool = False
    discovery_success: bool | None = None
    discovery_last_success: float | None = None
