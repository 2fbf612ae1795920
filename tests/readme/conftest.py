"""Runs the README's commands grouped by the mesh's mode.

pytest groups tests by a module-scoped fixture's parameter position, not its
value, so the README test's (command, mode) pairs would alternate between
modes and restart the mesh at each change; sorted here (after pytest's own
ordering, stable), the mesh starts once with mTLS on and once with it off.
"""

from __future__ import annotations

import pytest


def _mode(item: pytest.Item) -> str:
    callspec = getattr(item, "callspec", None)
    return str(callspec.params.get("stack", "")) if callspec is not None else ""


@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    items.sort(key=lambda item: item.path.parent.name == "readme" and _mode(item) == "off")
