"""Process entry point shared by the Python services' `__main__` modules.

MESH_EVENT_LOOP picks the event loop: `asyncio` (the default) or `uvloop`.
The switch exists for the measurement in bench/README.md ("uvloop, measured"):
grpc.aio does its I/O on gRPC core's own poller thread and hands completions
to the loop through one socket, so uvloop only speeds up the Python-side
scheduling. It is opt-in, and uvloop is not a dependency: choosing it without
uvloop installed is a configuration error.
"""

from __future__ import annotations

import asyncio
import importlib
import sys
from collections.abc import Callable, Coroutine, Mapping
from typing import Any

from mesh.config import ConfigError, Env

EVENT_LOOP_VARIABLE = "MESH_EVENT_LOOP"
LoopFactory = Callable[[], asyncio.AbstractEventLoop]


def loop_factory(env: Env) -> LoopFactory | None:
    """The factory MESH_EVENT_LOOP asks for; None is asyncio's own loop."""
    choice = env.text(EVENT_LOOP_VARIABLE, "asyncio").lower()
    if choice == "asyncio":
        return None
    if choice != "uvloop":
        raise ConfigError(f"{EVENT_LOOP_VARIABLE} must be asyncio or uvloop, got {choice!r}")
    try:
        # Imported by name: uvloop is optional and not in the lock.
        uvloop = importlib.import_module("uvloop")
    except ImportError:
        raise ConfigError(f"{EVENT_LOOP_VARIABLE}=uvloop but uvloop is not installed") from None
    factory: LoopFactory = uvloop.new_event_loop
    return factory


def run(
    main: Callable[[], Coroutine[Any, Any, None]], environ: Mapping[str, str] | None = None
) -> None:
    """Runs `main`; a configuration error ends the process with status 2 and
    one line naming the variable, a port that cannot be bound with status 1,
    neither with a traceback."""
    try:
        env = Env() if environ is None else Env(environ)
        with asyncio.Runner(loop_factory=loop_factory(env)) as runner:
            runner.run(main())
    except ConfigError as error:
        print(f"configuration error: {error}", file=sys.stderr)
        sys.exit(2)
    except OSError as error:
        print(f"cannot start: {error}", file=sys.stderr)
        sys.exit(1)
