"""Which metric families are exported (`--metrics.allowlist`, `--metrics.denylist`), by name.

A family matches an expression that matches the whole of its name (`re.fullmatch`); a counter
also matches by its `_total` name, as the text format and the README write it. The denylist
wins over the allowlist; an empty allowlist keeps every family. Snapshot families are filtered
where they are declared, so that a family left out is never built; live collectors are wrapped
(`filtered`).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass

from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector


@dataclass(frozen=True, slots=True)
class MetricFilter:
    allow: tuple[re.Pattern[str], ...] = ()
    deny: tuple[re.Pattern[str], ...] = ()

    @property
    def active(self) -> bool:
        return bool(self.allow or self.deny)

    def keeps(self, name: str, kind: str) -> bool:
        """Whether the family `name` of type `kind` ("counter", "gauge", ...) is exported."""
        names = (name, f"{name}_total") if kind == "counter" else (name,)
        if any(pattern.fullmatch(n) for pattern in self.deny for n in names):
            return False
        return not self.allow or any(pattern.fullmatch(n) for pattern in self.allow
                                     for n in names)


KEEP_ALL = MetricFilter()


class Filtered(Collector):
    """A collector's families that `keep` keeps."""

    def __init__(self, collector: Collector, keep: MetricFilter) -> None:
        self._collector = collector
        self._keep = keep

    def collect(self) -> Iterator[Metric]:
        for family in self._collector.collect():
            if self._keep.keeps(family.name, family.type):
                yield family


def filtered(collector: Collector, keep: MetricFilter) -> Collector:
    """`collector`, filtered when `keep` leaves anything out."""
    return Filtered(collector, keep) if keep.active else collector
