"""The exposition's own sample-line writer against prometheus-client's text encoder: the same
bytes for every family it writes, and no answer (the encoder's own path) for the rest."""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st
from prometheus_client.exposition import generate_latest
from prometheus_client.metrics_core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector, CollectorRegistry

from exporter.model import TargetKey
from exporter.render.exposition import _Batch, _body, _Lines, _part_body, _sample_lines
from exporter.render.families import CounterFamily, Family, FamilySpec

values = st.one_of(st.floats(allow_nan=True, allow_infinity=True),
                   st.integers(min_value=-(2**70), max_value=2**70),
                   st.sampled_from([0, -0.0, 1e-300, 1e300, 0.1, 2**53 + 1, True]))
label_values = st.text(alphabet=st.characters(codec="utf-8"), max_size=12) | st.sampled_from(
    ["", "\\", "\n", '"', '\\n', 'a"b\\c\nd', "é✓", "\u2028"])


class _One(Collector):
    def __init__(self, family: Metric) -> None:
        self.family = family

    def collect(self) -> list[Metric]:
        return [self.family]


def reference(family: Metric) -> bytes:
    """prometheus-client's text encoding of the family, less its HELP and TYPE lines."""
    lines = reference_with_header(family).split(b"\n")
    assert lines[0].startswith(b"# HELP ") and lines[1].startswith(b"# TYPE ")
    return b"\n".join(lines[2:])


@settings(max_examples=300, deadline=None)
@given(counter=st.booleans(),
       samples=st.lists(st.tuples(label_values, label_values, values), max_size=8))
def test_the_same_bytes_as_prometheus_client(counter: bool,
                                             samples: list[tuple[str, str, float]]) -> None:
    labels = ["zone", "account_id"]  # not sorted: the encoder sorts them
    family: GaugeMetricFamily | CounterFamily = (
        CounterFamily("macie_x", "help \\ text\n", labels=labels) if counter
        else GaugeMetricFamily("macie_x", "help", labels=labels))
    for zone, account, value in samples:
        family.add_metric([zone, account], value)
    assert _sample_lines(family) == reference(family)


def test_a_family_without_labels() -> None:
    family = GaugeMetricFamily("macie_up", "help", value=1)
    assert _sample_lines(family) == reference(family) == b"macie_up 1.0\n"


def test_what_it_does_not_write_goes_to_prometheus_client() -> None:
    stamped = GaugeMetricFamily("macie_x", "help", labels=["a"])
    stamped.add_metric(["1"], 2.0, timestamp=12.5)
    reserved = GaugeMetricFamily("macie_x", "help", labels=["__a"])
    reserved.add_metric(["1"], 2.0)
    colon = GaugeMetricFamily("macie:x", "help", labels=["a"])
    colon.add_metric(["1"], 2.0)
    for family in (stamped, reserved, colon):
        assert _sample_lines(family) is None
        header = generate_latest_header(family)
        assert _body(generate_latest, family, header) == reference(family)
    assert reference(stamped) == b'macie_x{a="1"} 2.0 12500\n'


def generate_latest_header(family: Metric) -> bytes:
    """The family's HELP and TYPE lines, as prometheus-client writes them."""
    return reference_with_header(GaugeMetricFamily(family.name, family.documentation,
                                                   labels=["a"]))


def reference_with_header(family: Metric) -> bytes:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_One(family))
    return generate_latest(registry)


def _spec(counter: bool, labels: list[str]) -> FamilySpec[list[tuple[list[str], float]]]:
    def make() -> GaugeMetricFamily | CounterFamily:
        if counter:
            return CounterFamily("macie_x", "help", labels=labels)
        return GaugeMetricFamily("macie_x", "help", labels=labels)

    def add(family: Family, key: TargetKey, part: list[tuple[list[str], float]], lo: int,
            hi: int) -> None:
        for values, value in part[lo:hi]:
            family.add_metric(values, value)
    return FamilySpec("macie_x", make, add, part=lambda _t: [], size=len)


def _made(spec: FamilySpec[list[tuple[list[str], float]]], key: TargetKey,
          part: list[tuple[list[str], float]]) -> Metric:
    family = spec.make()
    spec.add(family, key, part, 0, len(part))
    return family


@settings(max_examples=300, deadline=None)
@given(counter=st.booleans(),
       parts=st.lists(st.lists(st.tuples(label_values, label_values, values), max_size=4),
                      min_size=1, max_size=5))
def test_a_batch_writes_each_targets_lines_as_prometheus_client_does(
        counter: bool, parts: list[list[tuple[str, str, float]]]) -> None:
    """The batch records what `add` gives `add_metric` and writes the lines itself: the same
    bytes, target by target, as prometheus-client's encoding of the family made from them."""
    spec = _spec(counter, ["zone", "account_id"])  # not sorted: the encoder sorts them
    header = reference_with_header(spec.make())
    batch = _Batch(_Lines(spec), header, generate_latest)
    keys = [TargetKey(f"{n:012d}", "eu-west-1") for n in range(len(parts))]
    made = [[([zone, account], value) for zone, account, value in part] for part in parts]
    for key, part in zip(keys, made, strict=True):
        batch.add(key, part, len(part))
    encoded = batch.flush()
    for key, part in zip(keys, made, strict=True):
        assert encoded[key] == reference(_made(spec, key, part))
        assert _part_body(_Lines(spec), generate_latest, header, key, part, 0, len(part)) == (
            encoded[key])


def test_what_the_batch_does_not_write_itself_is_encoded_by_prometheus_client() -> None:
    key = TargetKey("123456789012", "eu-west-1")
    cases: list[tuple[FamilySpec[list[tuple[list[str], float]]], list[Any]]] = [
        (_spec(False, ["a", "b"]), [(["1"], 2.0)]),  # fewer values than labels: zip's rule
        (_spec(True, ["__a"]), [(["1"], 2.0)]),  # a reserved label name
    ]
    for spec, part in cases:
        header = reference_with_header(spec.make())
        batch = _Batch(_Lines(spec), header, generate_latest)
        batch.add(key, part, len(part))
        assert batch.flush()[key] == reference(_made(spec, key, part))

    stamped = FamilySpec("macie_x", lambda: GaugeMetricFamily("macie_x", "help", labels=["a"]),
                         lambda family, _key, _part, _lo, _hi: family.add_metric(
                             ["1"], 2.0, 12.5), part=lambda _t: None)
    header = reference_with_header(stamped.make())
    batch = _Batch(_Lines(stamped), header, generate_latest)
    batch.add(key, None, 1)
    assert batch.flush()[key] == b'macie_x{a="1"} 2.0 12500\n'
