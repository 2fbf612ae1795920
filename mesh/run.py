"""Process entry point shared by the Python services' `__main__` modules."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Callable, Coroutine
from typing import Any

from mesh.config import ConfigError


def run(main: Callable[[], Coroutine[Any, Any, None]]) -> None:
    """Runs `main`; a configuration error ends the process with status 2 and
    one line naming the variable, a port that cannot be bound with status 1,
    neither with a traceback."""
    try:
        asyncio.run(main())
    except ConfigError as error:
        print(f"configuration error: {error}", file=sys.stderr)
        sys.exit(2)
    except OSError as error:
        print(f"cannot start: {error}", file=sys.stderr)
        sys.exit(1)
