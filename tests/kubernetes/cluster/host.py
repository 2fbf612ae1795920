"""What the cluster changes on the machine outside its own folder, and how each
change is undone: two sysctls, the pods' bridge, iptables chains, cgroups
and mounts. `undo` removes whatever a run left, also one that was killed
(it reads what the run recorded in its state folder)."""

from __future__ import annotations

import itertools
import json
import re
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from tests.kubernetes.cluster.layout import CGROUP_ROOT, POD_BRIDGE, POD_GATEWAY, POD_SUBNET

SYSCTLS = ("net/ipv4/ip_forward", "net/bridge/bridge-nf-call-iptables")
FIREWALL_TABLES = [(f, t) for f in ("iptables", "ip6tables") for t in ("filter", "nat", "mangle")]
# The chains the kubelet, kube-proxy and the CNI plugins make.
PREFIXES = ("KUBE-", "CNI-")


def _run(*argv: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, capture_output=True, text=True, check=check, timeout=60)


def _sysctl_path(name: str) -> Path:
    return Path("/proc/sys") / name


def prepare(state: Path) -> None:
    """Records the sysctls and the iptables chains that exist before the run
    (so `undo` removes only what the run added), then turns on forwarding
    (kube-proxy's Service addresses are routed) and makes the bridge, with
    the address CoreDNS answers on, before any pod exists."""
    record = {
        "sysctls": {n: _sysctl_path(n).read_text().strip() for n in SYSCTLS},
        "chains": {f"{f} {t}": sorted(_chains(f, t)) for f, t in FIREWALL_TABLES},
        "bridge_existed": _link_exists(POD_BRIDGE),
    }
    (state / "host.json").write_text(json.dumps(record, indent=2))
    for name in SYSCTLS:
        _sysctl_path(name).write_text("1\n")
    if not record["bridge_existed"]:
        _run("ip", "link", "add", POD_BRIDGE, "type", "bridge")
    prefix = POD_SUBNET.split("/")[1]
    _run("ip", "addr", "replace", f"{POD_GATEWAY}/{prefix}", "dev", POD_BRIDGE)
    _run("ip", "link", "set", POD_BRIDGE, "up")
    _make_cgroups()


def _make_cgroups() -> None:
    """The kubelet's cgroupRoot must exist in every hierarchy before it starts.
    A new cpuset cgroup starts with no CPUs or memory nodes: it gets its
    parent's, or no process could join it."""
    for hierarchy in Path("/sys/fs/cgroup").iterdir():
        if not (hierarchy / "cgroup.procs").exists():
            continue
        folder = hierarchy / CGROUP_ROOT.lstrip("/")
        folder.mkdir(exist_ok=True)
        for name in ("cpuset.cpus", "cpuset.mems"):
            if (folder / name).exists() and not (folder / name).read_text().strip():
                (folder / name).write_text((hierarchy / name).read_text())


def undo(state: Path, problems: list[str]) -> None:
    """Everything `prepare` and the cluster's programs changed, once they are
    stopped; what could not be undone is appended to `problems`."""
    try:
        record = json.loads((state / "host.json").read_text())
    except (OSError, ValueError):
        return  # the run never got as far as changing the machine
    _unmount_under(state, problems)
    _remove_new_chains(record["chains"], problems)
    if not record["bridge_existed"] and _link_exists(POD_BRIDGE):
        result = _run("ip", "link", "delete", POD_BRIDGE, check=False)
        if result.returncode:
            problems.append(f"bridge {POD_BRIDGE}: {result.stderr.strip()}")
    _remove_cgroups(problems)
    for name, value in record["sysctls"].items():
        try:
            _sysctl_path(name).write_text(f"{value}\n")
        except OSError as error:
            problems.append(f"sysctl {name}: {error}")
    problems += [f"left behind: {thing}" for thing in _leftovers(state, record)]


def _leftovers(state: Path, record: dict[str, Any]) -> list[str]:
    """What is still there after `undo`: a check, not trust in the steps above."""
    found = [f"mount {m}" for m in mounts_under(state)]
    if not record["bridge_existed"] and _link_exists(POD_BRIDGE):
        found.append(f"bridge {POD_BRIDGE}")
    for family, table in FIREWALL_TABLES:
        before = set(record["chains"].get(f"{family} {table}", []))
        new = _chains(family, table) - before
        found += [f"{family} -t {table} chain {c}" for c in sorted(new) if c.startswith(PREFIXES)]
    found += [f"cgroup {folder}" for folder in cgroup_folders()]
    return found


def _link_exists(name: str) -> bool:
    return Path("/sys/class/net", name).exists()


def _chains(family: str, table: str) -> set[str]:
    out = _run(family, "-t", table, "-S", check=False).stdout
    return {line.split()[1] for line in out.splitlines() if line.startswith("-N ")}


def mounts_under(folder: Path) -> list[str]:
    """Mount points under `folder`, deepest first (the order to unmount them)."""
    prefix = str(folder).rstrip("/") + "/"
    points = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        point = line.split()[4].replace("\\040", " ")
        if point.startswith(prefix):
            points.append(point)
    return sorted(set(points), key=lambda p: p.count("/"), reverse=True)


def _unmount_under(folder: Path, problems: list[str]) -> None:
    for point in mounts_under(folder):
        result = _run("umount", "--lazy", point, check=False)
        if result.returncode:
            problems.append(f"umount {point}: {result.stderr.strip()}")


def _remove_new_chains(before: dict[str, list[str]], problems: list[str]) -> None:
    """Every KUBE-* and CNI-* chain the run added (the kubelet's canaries,
    kube-proxy's rules, the CNI plugins' masquerade and firewall chains, also
    of pods whose CNI DEL never ran), with the rules that jump to them."""
    for family, table in FIREWALL_TABLES:
        key = f"{family} {table}"
        new = {
            c for c in _chains(family, table) - set(before.get(key, [])) if c.startswith(PREFIXES)
        }
        if not new:
            continue
        for line in _run(family, "-t", table, "-S", check=False).stdout.splitlines():
            words = _split_rule(line)
            if words[0] == "-A" and words[1] not in new and _jump(words) in new:
                result = _run(family, "-t", table, "-D", *words[1:], check=False)
                if result.returncode:
                    problems.append(f"{family} -t {table} {line}: {result.stderr.strip()}")
        for chain in new:
            _run(family, "-t", table, "-F", chain, check=False)
        for chain in new:
            result = _run(family, "-t", table, "-X", chain, check=False)
            if result.returncode:
                problems.append(f"{family} -t {table} -X {chain}: {result.stderr.strip()}")


def _jump(words: list[str]) -> str:
    for flag, target in itertools.pairwise(words):
        if flag in ("-j", "-g"):
            return target
    return ""


def _split_rule(rule: str) -> list[str]:
    # `-S` quotes comments, which may hold spaces.
    return [w.strip('"') for w in re.findall(r'"[^"]*"|\S+', rule)]


def cgroup_folders() -> Iterator[Path]:
    """The run's cgroup folder in every mounted hierarchy that has one."""
    for hierarchy in Path("/sys/fs/cgroup").iterdir():
        folder = hierarchy / CGROUP_ROOT.lstrip("/")
        if folder.is_dir():
            yield folder
    direct = Path("/sys/fs/cgroup") / CGROUP_ROOT.lstrip("/")
    if direct.is_dir() and (direct / "cgroup.procs").exists():
        yield direct


def _remove_cgroups(problems: list[str]) -> None:
    for top in cgroup_folders():
        # A cgroup is removed with rmdir once its children are; deepest first.
        folders = sorted(
            (p for p in top.rglob("*") if p.is_dir()),
            key=lambda p: len(p.parts),
            reverse=True,
        )
        for folder in [*folders, top]:
            try:
                folder.rmdir()
            except OSError as error:
                problems.append(f"cgroup {folder}: {error}")
