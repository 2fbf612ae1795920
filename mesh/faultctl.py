"""`python -m mesh.faultctl` (`make fault`): switch injected faults at run time.

Every service reads the fault file (MESH_FAULTS_FILE; `faults/faults.yaml`
for `make up` and for compose, which mounts that folder) again within a
second of a change (`mesh.faults`), so this only edits the file:

    python -m mesh.faultctl set payments --delay-ms 300
    python -m mesh.faultctl set inventory --error-ratio 0.3 [--code CODE] [--method ReserveStock]
    python -m mesh.faultctl clear [SERVICE [--method M]]
    python -m mesh.faultctl show

`set` replaces the rule of one service and method (default `*`, every
method) and keeps the others. The new file is checked with every service's
reader before it replaces the old one, by rename, so a service never reads
half a file.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml

from mesh.certs import SERVICES
from mesh.faults import ERROR_CODES, EVERY_METHOD, FaultFileError, parse_faults
from mesh.yamlschema import REPO_ROOT

DEFAULT_FILE = REPO_ROOT / "faults" / "faults.yaml"
HEADER = (
    "# Run-time faults (mesh/faults.py), written by `make fault` / python -m mesh.faultctl.\n"
    "# Every service reads this file again within a second of a change.\n"
)

Faults = dict[str, dict[str, dict[str, Any]]]  # service -> method -> rule


def read(path: Path) -> Faults:
    """The file's rules; none when it is missing or empty."""
    try:
        document = yaml.safe_load(path.read_text()) or {}
    except FileNotFoundError:
        return {}
    return {
        str(service): {str(method): dict(rule) for method, rule in (methods or {}).items()}
        for service, methods in (document.get("faults") or {}).items()
    }


def write(path: Path, faults: Faults) -> None:
    """Checks `faults` as each service would, then replaces the file atomically."""
    text = HEADER + yaml.safe_dump(
        {"version": 1, "faults": {s: m for s, m in faults.items() if m}}, sort_keys=False
    )
    for service in SERVICES:
        parse_faults(text, service, str(path))  # FaultFileError names the problem
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, temporary = tempfile.mkstemp(dir=path.parent, prefix=".faults-", suffix=".yaml")
    with os.fdopen(fd, "w") as file:
        file.write(text)
    os.chmod(temporary, 0o644)  # read by services running as other users (compose)
    os.replace(temporary, path)


def describe(faults: Faults) -> str:
    lines = []
    for service, methods in sorted(faults.items()):
        for method, rule in sorted(methods.items()):
            parts = [f"{key}={value}" for key, value in rule.items()]
            lines.append(f"{service} {method}: {', '.join(parts)}")
    return "\n".join(lines) or "no faults"


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m mesh.faultctl", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--file", type=Path, default=DEFAULT_FILE, help="the fault file")
    commands = parser.add_subparsers(dest="command", required=True)
    set_ = commands.add_parser("set", help="inject a fault into a service (one method or all)")
    set_.add_argument("service", choices=SERVICES)
    set_.add_argument("--method", default=EVERY_METHOD, help="a method's short name (default: all)")
    set_.add_argument("--delay-ms", type=int, default=0)
    set_.add_argument("--error-ratio", type=float, default=0.0, help="0 to 1")
    set_.add_argument("--code", default="UNAVAILABLE", choices=ERROR_CODES)
    clear = commands.add_parser("clear", help="remove faults (all, a service's, or one method's)")
    clear.add_argument("service", nargs="?", choices=SERVICES)
    clear.add_argument("--method")
    commands.add_parser("show", help="print the faults in force")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    path: Path = args.file
    faults = read(path)
    if args.command == "set":
        rule: dict[str, Any] = {}
        if args.delay_ms:
            rule["delay_ms"] = args.delay_ms
        if args.error_ratio:
            rule["error_ratio"] = args.error_ratio
            rule["error_code"] = args.code
        if not rule:
            print("nothing to inject: give --delay-ms and/or --error-ratio", file=sys.stderr)
            return 2
        faults.setdefault(args.service, {})[args.method] = rule
    elif args.command == "clear":
        if args.service is None:
            faults = {}
        elif args.method is None:
            faults.pop(args.service, None)
        else:
            faults.get(args.service, {}).pop(args.method, None)
    if args.command != "show":
        try:
            write(path, faults)
        except FaultFileError as error:
            print(f"not written: {error}", file=sys.stderr)
            return 2
    print(describe(faults))
    return 0


if __name__ == "__main__":
    sys.exit(main())
