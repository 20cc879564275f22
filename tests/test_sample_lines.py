"""The exposition's own sample-line writer against prometheus-client's text encoder: the same
bytes for every family it writes, and no answer (the encoder's own path) for the rest."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st
from prometheus_client.exposition import generate_latest
from prometheus_client.metrics_core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector, CollectorRegistry

from exporter.render.exposition import _body, _sample_lines
from exporter.render.families import CounterFamily

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
