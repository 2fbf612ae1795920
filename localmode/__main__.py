"""`python -m localmode up|down|status`: the mesh as local processes.

`up` starts every compose.yaml service that has an `x-local` entry on its
compose ports and returns when each one is ready; `down` stops what `up`
started, by PID. State lives in .run/ (logs in .run/logs/).
"""

from __future__ import annotations

import argparse
import sys

from localmode.processes import Stack, StartError, port_in_use, start_all
from localmode.topology import REPO_ROOT, Topology

RUN_DIR = REPO_ROOT / ".run"


def up(stack: Stack, topology: Topology) -> int:
    running = [name for name in stack.recorded() if stack.alive(name)]
    if running:
        print(f"already up: {', '.join(running)} (run 'make down' first)", file=sys.stderr)
        return 1
    ports = topology.default_ports()
    taken = [f"{name}:{port}" for (name, port) in ports if port_in_use(port)]
    if taken:
        print(f"ports already in use: {', '.join(taken)}", file=sys.stderr)
        return 1
    services = [topology.resolve(name, ports, RUN_DIR) for name in topology.names]
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
