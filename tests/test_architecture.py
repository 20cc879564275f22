"""The code's layout holds: imports point down, the production path loads no demo code, each
AWS operation is named in one product module, and everything derived from the collector
registry agrees with it (options, IAM policy, the simulator's operations)."""

from __future__ import annotations

import ast
import json
import re
import subprocess
import sys
from pathlib import Path

import botocore.session
import pytest

from exporter.collectors import REGISTRY, iam_policy, operations
from exporter.collectors.base import Settings
from exporter.config import OPTIONS, collector_flag
from exporter.demo.simulator import served_operations
from tests.conftest import REPO

PACKAGE = REPO / "exporter"
# Top to bottom: a module may import its own room and the rooms below it, never above.
LAYERS = ("cli", "demo", "config", "web", "engine", "collectors", "aws", "render", "base")
ROOMS = {"cli": "cli", "__main__": "cli", "reload": "cli", "demo": "demo", "config": "config",
         "web": "web", "engine": "engine", "collectors": "collectors", "aws": "aws",
         "render": "render", "model": "base", "logs": "base", "__init__": "base"}


def room(module: str) -> str:
    """The room of `exporter.<room>[.<module>]`."""
    parts = module.split(".")
    return ROOMS[parts[1] if len(parts) > 1 else "__init__"]


def modules() -> dict[str, Path]:
    found = {}
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(REPO).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        found[name] = path
    return found


def imports(path: Path, name: str) -> set[str]:
    """The project modules `path` imports (at module level or in a function)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    found: set[str] = set()
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.startswith("exporter")}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(package.split(".")[:len(package.split(".")) - node.level + 1]
                                + ([base] if base else []))
            if base.startswith("exporter"):
                found.add(base)
    return found


def test_every_module_has_a_room() -> None:
    for name in modules():
        assert room(name) in LAYERS, name


def test_imports_point_down() -> None:
    upward = []
    for name, path in modules().items():
        mine = LAYERS.index(room(name))
        for target in imports(path, name):
            if target == "exporter":  # the package face: its version
                continue
            theirs = LAYERS.index(room(target))
            if theirs < mine:
                upward.append(f"{name} -> {target}")
    assert not upward, upward


def test_the_walker_sees_an_upward_import(tmp_path: Path) -> None:
    """The check above can fail: an aws module importing the engine is caught."""
    module = tmp_path / "bad.py"
    module.write_text("from exporter.engine.pool import CallPool\n", encoding="utf-8")
    (target,) = imports(module, "exporter.aws.bad")
    assert LAYERS.index(room(target)) < LAYERS.index(room("exporter.aws.bad"))


def test_the_production_entry_point_loads_no_demo_code() -> None:
    probe = ("import sys, exporter.cli\n"
             "print(sorted(m for m in sys.modules if m.startswith('exporter.demo')))\n")
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                         check=True, cwd=REPO)
    assert out.stdout.strip() == "[]"


def test_every_operation_is_named_in_one_product_module() -> None:
    product = [path for name, path in modules().items() if room(name) != "demo"]
    for operation in operations():
        named = [str(p.relative_to(REPO)) for p in product
                 if re.search(rf"\b{operation.name}\b", p.read_text(encoding="utf-8"))]
        assert len(named) == 1, f"{operation.name} named in {named}"


def test_the_registry_is_consistent() -> None:
    names = [c.name for c in REGISTRY]
    assert len(set(names)) == len(names)
    assert {c.slot.name for c in REGISTRY} == set(names)
    families = [spec.name for c in REGISTRY for spec in c.families(Settings(tag_keys=("t",)))]
    assert len(set(families)) == len(families), "a family is declared twice"


def test_options_come_from_the_registry() -> None:
    options = {o.flag: o for o in OPTIONS}
    for collector in REGISTRY:
        if collector.switch is not None:
            flag = collector_flag(collector.name)
            assert {flag, f"{flag}.interval"} <= options.keys()
            # Flags are dashed; the YAML keys keep the registry's name.
            assert "_" not in flag
            assert options[flag].yaml_path == ("collector", collector.name)
            assert options[f"{flag}.interval"].yaml_path == ("collector",
                                                             f"{collector.name}_interval")
        else:
            assert collector.interval_option in options


def test_a_collector_named_with_an_underscore_has_dashed_flags() -> None:
    """`job_errors`: `--collector.job-errors`, MACIE_EXPORTER_COLLECTOR_JOB_ERRORS,
    `collector: {job_errors: ..., job_errors_interval: ...}`."""
    options = {o.flag: o for o in OPTIONS}
    switch, interval = options["collector.job-errors"], options["collector.job-errors.interval"]
    assert (switch.env, interval.env) == ("MACIE_EXPORTER_COLLECTOR_JOB_ERRORS",
                                          "MACIE_EXPORTER_COLLECTOR_JOB_ERRORS_INTERVAL")
    assert (switch.yaml_path, interval.yaml_path) == (("collector", "job_errors"),
                                                      ("collector", "job_errors_interval"))


def test_operations_are_real_botocore_operations() -> None:
    session = botocore.session.Session()
    for operation in operations():
        model = session.get_service_model(operation.service)
        assert operation.name in model.operation_names, operation
        assert operation.action == f"{model.signing_name}:{operation.name}"
        if operation.items is not None:  # paged: botocore has a paginator for it
            client = session.create_client(operation.service, region_name="us-east-1",
                                           aws_access_key_id="x", aws_secret_access_key="x")
            assert client.can_paginate(operation.method), operation
            output = model.operation_model(operation.name).output_shape
            assert output is not None and operation.items in output.members, operation


def test_the_simulator_serves_every_registered_operation() -> None:
    served = served_operations()
    missing = [o.name for o in operations() if (o.service, o.name) not in served]
    assert not missing, f"the simulator does not serve {missing}"


def test_the_readme_policy_is_the_registrys() -> None:
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    section = readme.split("### Least-privilege IAM policy", 1)[1]
    block = section.split("```json\n", 1)[1].split("```", 1)[0]
    assert json.loads(block) == iam_policy(), json.dumps(iam_policy(), indent=2)


@pytest.mark.parametrize("collector", [c.name for c in REGISTRY])
def test_each_collector_is_one_module(collector: str) -> None:
    path = PACKAGE / "collectors" / f"{collector}.py"
    assert path.exists()
    text = path.read_text(encoding="utf-8")
    assert "COLLECTOR = Collector(" in text


def test_the_readme_example_collector_works() -> None:
    """The worked example of "Adding a collector" is real code: it runs on the shape."""
    from exporter.aws.operations import MACIE, Operation
    from exporter.collectors.base import Call, Collector, Context, Fetch, Switch, call
    from exporter.collectors.fields import number
    from exporter.model import Slot, Snapshot, TargetKey, TargetResult
    from exporter.render.families import (
        TARGET_LABELS,
        AnySpec,
        Family,
        gauge,
        target_family,
    )

    readme = (REPO / "README.md").read_text(encoding="utf-8")
    section = readme.split("### Adding a collector", 1)[1]
    code = section.split("```python\n", 1)[1].split("```", 1)[0]
    names: dict[str, object] = {
        "MACIE": MACIE, "Operation": Operation, "Collector": Collector, "Context": Context,
        "Fetch": Fetch, "Switch": Switch, "call": call, "number": number, "Slot": Slot,
        "TargetKey": TargetKey, "Settings": Settings, "TARGET_LABELS": TARGET_LABELS,
        "AnySpec": AnySpec, "Family": Family, "gauge": gauge, "target_family": target_family}
    exec(compile("from __future__ import annotations\n" + re.sub(r"(?m)^   ", "", code),  # noqa: S102
                 "README example", "exec"), names)
    collector = names["COLLECTOR"]
    assert isinstance(collector, Collector)
    key = TargetKey("111122223333", "eu-west-1")

    class Ctx:
        result = TargetResult(key)
        previous = None

    fetch = collector.fetch(Ctx())  # type: ignore[arg-type]
    request = next(fetch)
    assert isinstance(request, Call) and request.operation.name == "GetBucketStatistics"
    with pytest.raises(StopIteration) as stop:
        fetch.send({"bucketCount": 7})
    result = TargetResult(key).with_value(collector.slot, stop.value.value)
    (spec,) = collector.families(Settings())
    family = spec.family(Snapshot((result,)))
    assert [(s.name, s.labels, s.value) for s in family.samples] == [
        ("macie_s3_buckets", {"account_id": key.account_id, "region": key.region}, 7)]


def test_mypy_rejects_a_fetch_that_disagrees_with_its_slot(tmp_path: Path) -> None:
    """The value type is checked end to end: a fetch returning int for a Slot[str] fails."""
    bad = tmp_path / "bad_collector.py"
    bad.write_text('''
from exporter.collectors.base import Collector, Context, Fetch, Settings, Switch, call
from exporter.collectors.status import GET_MACIE_SESSION
from exporter.model import Slot
from exporter.render.families import AnySpec

SLOT: Slot[str] = Slot("bad")


def fetch(ctx: Context[int]) -> Fetch[int]:
    answer = yield from call(GET_MACIE_SESSION)
    return len(answer)


def families(_settings: Settings) -> list[AnySpec]:
    return []


COLLECTOR = Collector(name="bad", slot=SLOT, operations=(), fetch=fetch, families=families,
                      switch=Switch("1h", "never registered"))
''', encoding="utf-8")
    checked = subprocess.run(
        [sys.executable, "-m", "mypy", "--strict", "--no-incremental", str(bad)],
        capture_output=True, text=True, check=False, cwd=REPO)
    assert checked.returncode == 1, checked.stdout
    assert 'Argument "fetch" to "Collector" has incompatible type' in checked.stdout
