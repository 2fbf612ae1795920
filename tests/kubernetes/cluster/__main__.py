"""`python -m tests.kubernetes.cluster down`: stop what a killed cluster test
left running and undo its changes to the machine (scripts/kubernetes/k8s-test.sh
runs it before and after each run)."""

from __future__ import annotations

import sys

from tests.kubernetes.cluster.layout import Layout
from tests.kubernetes.cluster.node import clear_leftovers


def main(argv: list[str]) -> int:
    if argv != ["down"]:
        print(__doc__, file=sys.stderr)
        return 2
    problems = clear_leftovers(Layout.from_env())
    for problem in problems:
        print(f"cluster down: {problem}", file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
