"""`python -m localmode up|down|status`: the mesh as local processes.

`up` starts every compose.yaml service that has an `x-local` entry and is not
already running, on its compose ports, and returns when each one is ready;
`down` stops what `up` started, by PID. State lives in .run/ (logs in
.run/logs/).
"""

from __future__ import annotations

import argparse
import sys

from localmode.processes import Stack, StartError, port_in_use, start_all
from localmode.topology import REPO_ROOT, Topology

RUN_DIR = REPO_ROOT / ".run"


def up(stack: Stack, topology: Topology) -> int:
    """Starts every service that is not running; the running ones stay as they are.

    So `make up` after a crash (or a `kill`) brings back only what died.
    """
    ports = topology.default_ports()
    missing = [name for name in topology.names if not stack.alive(name)]
    running = [name for name in topology.names if name not in missing]
    if running:
        print(f"already running: {', '.join(running)}")
    if not missing:
        return 0
    taken = [
        f"{name}:{port}"
        for name in missing
        for port in topology.compose_ports[name]
        if port_in_use(ports[(name, port)])
    ]
    if taken:
        print(f"ports already in use: {', '.join(taken)}", file=sys.stderr)
        return 1
    services = [topology.resolve(name, ports, stack.run_dir) for name in missing]
    try:
        start_all(stack, services)
    except StartError as error:
        print(f"make up failed: {error}", file=sys.stderr)
        return 1
    for service in services:
        print(f"{service.name:<14} ready at {service.ready}")
    print(f"logs in {stack.run_dir / 'logs'}; stop with 'make down'")
    return 0


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m localmode")
    parser.add_argument("command", choices=["up", "down", "status"])
    args = parser.parse_args(argv)
    stack = Stack(RUN_DIR)
    if args.command == "up":
        return up(stack, Topology.load())
    if args.command == "down":
        stopped = stack.stop()
        print(f"stopped: {', '.join(stopped) or 'nothing was running'}")
        return 0
    for name in stack.recorded():
        print(f"{name:<14} {'running' if stack.alive(name) else 'dead'}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
