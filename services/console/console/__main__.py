"""`python -m console`: serve the mesh console (console/config.py lists the settings)."""

from __future__ import annotations

import logging
import sys

from aiohttp import web

from console.app import make_app
from console.config import ConsoleConfig
from mesh.config import ConfigError, Env


def main() -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s console %(levelname)s %(message)s")
    try:
        config = ConsoleConfig.from_env(Env())
    except ConfigError as error:
        print(f"console: configuration error: {error}", file=sys.stderr)
        return 2
    host, _, port = config.listen_addr.rpartition(":")
    logging.info("mesh console on http://%s:%s/", host, port)
    web.run_app(make_app(config), host=host, port=int(port), print=None)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
