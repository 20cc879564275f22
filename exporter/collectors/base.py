"""The shape every collector has, and the requests its fetch makes.

A collector is one module that declares a `Collector`: its name and options, the AWS
operations it calls, its fetch, the type of the value it keeps per target (its `Slot`), and its
metric families. The engine (exporter.engine) runs every collector of a target the same way.

A fetch is a generator: each request it yields is one turn on the call pool (one AWS call, or
the next page of a paged one), and the engine sends back the answer, or throws the call's
`ApiError` into the generator. `Parallel` yields several requests at once (describes: each is
its own turn, so many workers can serve one target). What the generator returns is the
collector's new value; an exception out of it fails the run, and the last value stays.
"""

from __future__ import annotations

from collections.abc import Callable, Generator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Generic, Protocol, TypeVar

from exporter.aws.errors import ApiError
from exporter.aws.operations import Operation
from exporter.aws.target import Pages
from exporter.model import Slot, TargetKey, TargetResult
from exporter.render.families import AnySpec

T = TypeVar("T")
R = TypeVar("R")


class MappingError(ValueError):
    """An API answer that cannot be turned into a value; names the offending field."""


class MacieDisabled(Exception):
    """Macie is not enabled in the target's account and region (raised out of a fetch)."""


# ------------------------------------------------------------------ requests


@dataclass(frozen=True, slots=True)
class Call:
    """One call of `operation` with `arguments`; answered with the API's answer (a dict)."""

    operation: Operation
    arguments: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class NextPage:
    """The next page of a paged call; answered with its items, or None after the last."""

    pages: Pages


@dataclass(frozen=True, slots=True)
class Parallel:
    """Several calls at once; answered with a list of their answers, an ApiError in the place
    of each one that failed. `background`: behind every target's other calls."""

    calls: tuple[Call, ...]
    background: bool = False


@dataclass(frozen=True, slots=True)
class ResolveAccount:
    """The account of a target without a role (GetCallerIdentity); answered with it, or None."""


@dataclass(frozen=True, slots=True)
class Published:
    """Wait until /metrics shows what the fetch published so far (`Context.publish`)."""


Request = Call | NextPage | Parallel | ResolveAccount | Published
# A fetch yields requests, is sent their answers, and returns the collector's value.
Fetch = Generator[Request, object, T]


def call(operation: Operation, **arguments: Any) -> Generator[Request, object, dict[str, Any]]:
    """`answer = yield from call(OPERATION, name=value)`: one call."""
    answer = yield Call(operation, arguments)
    assert isinstance(answer, dict)
    return answer


def pages(operation: Operation, **arguments: Any
          ) -> Generator[Request, object, list[dict[str, Any]]]:
    """`items = yield from pages(OPERATION, ...)`: every item of every page, a turn a page."""
    cursor = Pages(operation, arguments)
    items: list[dict[str, Any]] = []
    while True:
        page = yield NextPage(cursor)
        if page is None:
            return items
        assert isinstance(page, list)
        items.extend(page)


def parallel(calls: Sequence[Call], *, background: bool = False
             ) -> Generator[Request, object, list[dict[str, Any] | ApiError]]:
    """`answers = yield from parallel([...])`: the calls at once, an ApiError for a failed one."""
    if not calls:
        return []
    answers = yield Parallel(tuple(calls), background)
    assert isinstance(answers, list)
    return answers


# ------------------------------------------------------------------ what a fetch sees


@dataclass(frozen=True, slots=True)
class Settings:
    """What the collectors' behaviour depends on beside their own options."""

    tag_keys: tuple[str, ...] = ()
    interval: float = 60.0  # the refresh interval
    full_redescribe_interval: float = 86400.0
    terminal_max_age: float = 0.0
    # The jobs list's filterCriteria ({"includes": [...], "excludes": [...]}), or None.
    list_filter: Mapping[str, Any] | None = None
    # --refresh.idle-interval: how often a target with no active job is listed (0: never
    # less often than the refresh interval).
    idle_interval: float = 0.0
    # --buckets.only: the conditions a bucket must meet one of to be exported (empty: all).
    buckets_only: frozenset[str] = frozenset()
    # Each target's daily full list (and terminal re-describes) at its own phase of the
    # full-redescribe interval, rather than all 24 h after start-up.
    spread: bool = False


class Context(Protocol[T]):
    """What one run of a collector for one target knows and can do."""

    @property
    def key(self) -> TargetKey: ...
    @property
    def now(self) -> float: ...  # when the run started (seconds since the epoch)
    @property
    def settings(self) -> Settings: ...
    @property
    def result(self) -> TargetResult: ...  # the target's stored result when the run started
    @property
    def previous(self) -> T | None: ...  # this collector's last stored value
    def region_not_enabled(self, err: ApiError) -> bool: ...
    def adopt_account(self, account: str) -> None: ...
    # Store a value before the run ends (first data); `ready`: what is needed to be right now
    # is in it, so the run counts as done for readiness and health (the rest follows).
    def publish(self, value: T, ready: bool = False) -> None: ...


# ------------------------------------------------------------------ the shape


@dataclass(frozen=True, slots=True)
class Switch:
    """`--collector.<name>` (on by default) and `--collector.<name>.interval`."""

    default_interval: str  # a duration: "5m"
    help: str  # the flag's help and the README row: what it collects, from which API


@dataclass(frozen=True)
class Collector(Generic[T]):
    """One collector: everything about it, in the module that declares it."""

    name: str
    slot: Slot[T]
    operations: tuple[Operation, ...]
    fetch: Callable[[Context[T]], Fetch[T]]
    families: Callable[[Settings], Sequence[AnySpec]]
    # Its own flags; None: always on, at the interval of the `interval_option` flag.
    switch: Switch | None = None
    interval_option: str | None = None
    # Foreground collectors run in the target's refresh, before the others, urgent on the
    # pool; background ones after it, behind every target's foreground calls.
    foreground: bool = False
    # Whose health family reports its runs: "refresh" (macie_exporter_refresh_*),
    # "collector" (macie_exporter_collector_*{collector=...}) or None.
    health: str | None = "collector"
    # A failed run is tried again in the next refresh instead of after its interval.
    retry_failed: bool = False
    # Due before its interval when this says the stored value misses something (new jobs).
    stale: Callable[[TargetResult], bool] | None = None
    # Calls follow activity: while `idle(result, since)` says nothing it reads can have changed
    # since its last run (`since`), it runs every `idle_interval(settings)` instead.
    idle: Callable[[TargetResult, float | None], bool] | None = None
    idle_interval: Callable[[Settings], float] | None = None
    # A reload changed the settings from the first to the second: the value to keep instead
    # of the stored one when the change matters to it (the collector then runs at the
    # target's next refresh, from that value), or None when it does not.
    reconfigured: Callable[[T, Settings, Settings], T | None] | None = None

    def __post_init__(self) -> None:
        if self.slot.name != self.name:
            raise ValueError(f"collector {self.name!r} keeps its value under {self.slot!r}")
        if (self.switch is None) == (self.interval_option is None):
            raise ValueError(f"collector {self.name!r}: give a switch or an interval option")


AnyCollector = Collector[Any]
