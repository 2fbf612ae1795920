"""Each overlay rendered once per session; tests that change what they get
take a deep copy (`fresh`), so no test sees another's edits."""

from __future__ import annotations

import copy

import pytest

from tests.kubernetes.manifests import OVERLAYS, KustomizeMissing, Manifest, render_overlay


@pytest.fixture(scope="session")
def rendered() -> dict[str, list[Manifest]]:
    try:
        return {overlay: render_overlay(overlay) for overlay in OVERLAYS}
    except KustomizeMissing as error:
        pytest.fail(str(error))


@pytest.fixture
def fresh(rendered: dict[str, list[Manifest]]) -> dict[str, list[Manifest]]:
    return copy.deepcopy(rendered)
