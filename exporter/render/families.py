"""Metric families declared target by target, the unit the exposition cache keeps: a family's
samples for one target depend on that target's *part* of the snapshot alone, so a renderer may
keep a target's encoded samples for as long as its part stays equal.

The cache splits an encoded family back into targets by counting lines, so every sample must
be one line in both formats: a family is a gauge or a `CounterFamily` (a counter that cannot
carry `_created` samples, which the text format writes as a family of their own). This is
checked where a family is declared (`FamilySpec`), not mid-render, and so is that every name is
a legacy name (the cache encodes sample lines once for both formats).
"""

from __future__ import annotations

import enum
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from prometheus_client.metrics_core import CounterMetricFamily, GaugeMetricFamily, Metric

from exporter.model import Snapshot, TargetKey, TargetResult

P = TypeVar("P")
F = TypeVar("F", bound=Metric)
TARGET_LABELS = ("account_id", "region")
_LEGACY_NAME = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*")


class CounterFamily(CounterMetricFamily):
    """A counter family whose samples are `_total` lines only (no `created`)."""

    def add_metric(self, labels: Sequence[str], value: float,  # type: ignore[override]
                   timestamp: float | None = None) -> None:
        super().add_metric(labels, value, timestamp=timestamp)


# What a family's samples are added to.
Family = GaugeMetricFamily | CounterFamily


class Section(enum.IntEnum):
    """Where a family stands in the exposition: per-job series first, then per-target ones,
    then the refresh health and the collectors' health (the registry's order within each)."""

    JOB = 0
    TARGET = 1
    REFRESH_HEALTH = 2
    COLLECTOR_HEALTH = 3


def one_unit(_part: object) -> int:
    """The size of a part that is not per job."""
    return 1


@dataclass(frozen=True)
class FamilySpec(Generic[P]):
    """One metric family of the snapshot, built target by target.

    `add(family, key, part, lo, hi)` adds the samples of units `lo` to `hi` of a target's part:
    the jobs of a per-job family, so that a target with many jobs can be rendered a slice at a
    time; other parts are one unit (`size` says how many a part has).
    """

    name: str  # the family's name, as `make` names it
    make: Callable[[], Family]
    add: Callable[[Family, TargetKey, P, int, int], None]
    part: Callable[[TargetResult], P] | None = None
    size: Callable[[P], int] = one_unit
    # Parts that depend on more than their own target (usage: who reports an account).
    all_parts: Callable[[Snapshot], Iterable[tuple[TargetKey, P]]] | None = None
    section: Section = Section.TARGET
    # A part bigger than a batch is encoded a slice at a time and, unless this says its parts
    # change rarely (buckets, read hourly), not kept: 10,000 jobs change in every refresh.
    keep_large: bool = False
    kind: str = field(init=False, default="")

    def __post_init__(self) -> None:
        family = self.make()
        if not isinstance(family, GaugeMetricFamily | CounterFamily):
            raise TypeError(f"{self.name}: the exposition cache keeps gauges and "
                            f"CounterFamily counters only, not {type(family).__name__}")
        if family.name != self.name:
            raise ValueError(f"family {family.name!r} declared as {self.name!r}")
        # The cache encodes sample lines once for both formats and every escaping: true of
        # legacy names only (no ':', which an OpenMetrics sample line would escape).
        for name in (family.name, *getattr(family, "_labelnames", ())):
            if not _LEGACY_NAME.fullmatch(name):
                raise ValueError(f"{self.name}: {name!r} is not a legacy metric or label name "
                                 "([a-zA-Z_][a-zA-Z0-9_]*)")
        if (self.part is None) == (self.all_parts is None):
            raise ValueError(f"{self.name}: give exactly one of part and all_parts")
        object.__setattr__(self, "kind", family.type)

    def parts(self, snapshot: Snapshot) -> Iterable[tuple[TargetKey, P]]:
        if self.all_parts is not None:
            return self.all_parts(snapshot)
        part = self.part
        assert part is not None
        return ((target.key, part(target)) for target in snapshot.targets)

    def family(self, snapshot: Snapshot) -> Metric:
        """The whole family for `snapshot`."""
        family = self.make()
        for key, part in self.parts(snapshot):
            self.add(family, key, part, 0, self.size(part))
        return family


def gauge(name: str, documentation: str, labels: Sequence[str]) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, documentation, labels=list(labels))


def state_set(family: Family, labels: Sequence[str], states: Sequence[str],
              current: str) -> None:
    """One series per documented state, 1 for the current one; an undocumented one is kept."""
    for state in states:
        family.add_metric([*labels, state], 1 if current == state else 0)
    if current not in states:
        family.add_metric([*labels, current], 1)


def target_family(name: str, make: Callable[[], Family],
                  part: Callable[[TargetResult], P],
                  add: Callable[[Family, TargetKey, P], None],
                  section: Section = Section.TARGET) -> FamilySpec[P]:
    """A family with a few series per target; `add` gets the target's key and part."""
    def add_all(family: Family, key: TargetKey, value: P, lo: int, hi: int) -> None:
        add(family, key, value)
    return FamilySpec(name, make, add_all, part=part, section=section)


# A list of families of different parts: each spec's part type was checked where it was made
# (its `part` and `add` agree); a list of them forgets which it was.
AnySpec = FamilySpec[Any]


def ordered(specs: Iterable[AnySpec]) -> tuple[AnySpec, ...]:
    """Families in exposition order: by section, then as given (a stable sort)."""
    return tuple(sorted(specs, key=lambda spec: spec.section))
