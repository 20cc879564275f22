"""The README's tables stay true: every option and every metric family is documented."""

from __future__ import annotations

import re

from exporter.config import OPTIONS, collector_readme_rows
from tests.conftest import FIXTURES, REPO

README = (REPO / "README.md").read_text(encoding="utf-8")


def test_every_option_is_in_the_configuration_table() -> None:
    for option in OPTIONS:
        rows = [line for line in README.splitlines() if line.startswith(f"| `--{option.flag}`")]
        row = rows[0] if rows else None
        assert row is not None, f"--{option.flag} missing from the README table"
        assert f"`{option.env}`" in row
        assert f"`{'.'.join(option.yaml_path)}`" in row


def test_the_collectors_rows_are_made_from_the_registry() -> None:
    rows = collector_readme_rows()
    assert len(rows) >= 6
    for row in rows:
        assert row in README.splitlines(), f"README row differs from the registry's:\n{row}"


def test_every_metric_is_in_the_metric_tables() -> None:
    golden = (FIXTURES / "golden.prom").read_text(encoding="utf-8")
    families = set(re.findall(r"^# TYPE (\S+) ", golden, re.MULTILINE))
    assert len(families) >= 15
    for name in families:
        assert f"| `{name}`" in README, f"{name} missing from the README"


def test_readme_shows_both_commands() -> None:
    assert "macie-exporter --demo" in README
    assert "bash scripts/test.sh" in README
    assert "bash scripts/test.sh" in (REPO / ".ci" / "run").read_text(encoding="utf-8")
