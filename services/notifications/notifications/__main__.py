"""`python -m notifications`: wiring only: config, telemetry, server, serve."""

from __future__ import annotations

from mesh.config import Env
from mesh.run import run
from notifications import SERVICE_NAME, SERVICE_VERSION
from notifications.config import NotificationsConfig
from notifications.server import create_server, serve
from tracing.interceptors import server_interceptors
from tracing.logs import configure_logging
from tracing.provider import configure_tracing


async def main() -> None:
    config = NotificationsConfig.from_env(Env())
    configure_logging(SERVICE_NAME, config.log_level)
    telemetry = configure_tracing(SERVICE_NAME, SERVICE_VERSION)
    server = await create_server(config, server_interceptors())
    try:
        await serve(server, config.server)
    finally:
        telemetry.shutdown()


if __name__ == "__main__":
    run(main)
