"""The fault switch of the page: the fault file every service watches
(mesh/faults.py), edited through mesh.faultctl's reader and writer, which
check the new file as each service would before it replaces the old one."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from mesh import faultctl
from mesh.certs import SERVICES
from mesh.faults import ERROR_CODES, EVERY_METHOD, FaultFileError


class BadFault(ValueError):
    """A request the fault file cannot take; the message names the field."""


class Unwritable(OSError):
    """The fault file cannot be read or written (compose: ./faults not
    writable by the console's user); the message says which file and why."""


def _read(path: Path) -> faultctl.Faults:
    try:
        return faultctl.read(path)
    except OSError as error:
        raise Unwritable(f"cannot read the fault file {path}: {error.strerror}") from None


def document(path: Path) -> dict[str, Any]:
    rules = [
        {
            "service": service,
            "method": method,
            "delay_ms": int(rule.get("delay_ms", 0)),
            "error_ratio": float(rule.get("error_ratio", 0.0)),
            "error_code": rule.get("error_code"),
        }
        for service, methods in sorted(_read(path).items())
        for method, rule in sorted(methods.items())
    ]
    return {"faults": rules, "services": list(SERVICES), "codes": list(ERROR_CODES)}


def inject(path: Path, service: str, body: Any) -> None:
    _check_service(service)
    if not isinstance(body, dict):
        raise BadFault("body: a JSON object with delay_ms, error_ratio, error_code, method")
    method = body.get("method") or EVERY_METHOD
    if not isinstance(method, str):
        raise BadFault("method: a method's short name, or * for all")
    rule: dict[str, Any] = {}
    delay = body.get("delay_ms", 0)
    ratio = body.get("error_ratio", 0)
    if not isinstance(delay, int) or isinstance(delay, bool) or delay < 0:
        raise BadFault("delay_ms: a whole number of milliseconds, 0 or more")
    if not isinstance(ratio, int | float) or isinstance(ratio, bool) or not 0 <= ratio <= 1:
        raise BadFault("error_ratio: a number from 0 to 1")
    if delay:
        rule["delay_ms"] = delay
    if ratio:
        code = body.get("error_code") or "UNAVAILABLE"
        if code not in ERROR_CODES:
            raise BadFault(f"error_code: one of {', '.join(ERROR_CODES)}")
        rule["error_ratio"] = float(ratio)
        rule["error_code"] = code
    if not rule:
        raise BadFault("delay_ms or error_ratio: give at least one above 0")
    faults = _read(path)
    faults.setdefault(service, {})[method] = rule
    _write(path, faults)


def clear(path: Path, service: str) -> None:
    _check_service(service)
    faults = _read(path)
    faults.pop(service, None)
    _write(path, faults)


def _check_service(service: str) -> None:
    if service not in SERVICES:
        raise BadFault(f"service: {service!r} is not one of {', '.join(SERVICES)}")


def _write(path: Path, faults: faultctl.Faults) -> None:
    try:
        faultctl.write(path, faults)
    except FaultFileError as error:
        raise BadFault(str(error)) from None
    except OSError as error:
        raise Unwritable(f"cannot write the fault file {path}: {error.strerror}") from None
