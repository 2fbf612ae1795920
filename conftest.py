"""Settings for every test run.

The mesh's mTLS is on by default (mesh/tls.py), for `make up` and compose
alike. Tests run plaintext unless they turn it on: MESH_MTLS=off here reaches
every process a test starts (compose.yaml's `${MESH_MTLS:-on}` reads it in
local mode) and every `Env()` read from this process's environment. Tests of
mTLS and the policy set MESH_MTLS=on for what they start (tests/conftest.py's
`start_stack(..., mtls=True)`), and the README test starts `make up` without
it, as a user does.

Faults likewise: the processes tests start read a fault file that never
exists unless a test writes it, not faults/faults.yaml, where `make fault`
(for a stack the user has up) may have left rules.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest


def pytest_configure(config: pytest.Config) -> None:
    os.environ["MESH_MTLS"] = "off"
    no_faults = Path(tempfile.mkdtemp(prefix="shopmesh-tests-")) / "faults.yaml"
    os.environ["MESH_FAULTS_FILE"] = str(no_faults)
