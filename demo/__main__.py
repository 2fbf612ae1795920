"""`python -m demo`: run by `make demo` once the mesh is up."""

from __future__ import annotations

import asyncio
import sys

from demo.story import main

if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
