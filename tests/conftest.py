"""Markers follow the folder: tests/unit -> unit, tests/integration -> integration, tests/e2e -> e2e."""

from __future__ import annotations

from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
_KINDS = ("unit", "integration", "e2e")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        kind = Path(item.path).relative_to(ROOT / "tests").parts[0]
        if kind in _KINDS:
            item.add_marker(getattr(pytest.mark, kind))
