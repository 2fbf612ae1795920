"""`python -m orders`: wiring only: config, telemetry, server, serve."""

from __future__ import annotations

from mesh.config import Env
from mesh.run import run
from orders import SERVICE_NAME, SERVICE_VERSION
from orders.config import OrdersConfig
from orders.server import create_server, serve
from tracing.interceptors import client_interceptors, server_interceptors
from tracing.logs import configure_logging
from tracing.provider import configure_tracing


async def main() -> None:
    config = OrdersConfig.from_env(Env())
    configure_logging(SERVICE_NAME, config.log_level)
    telemetry = configure_tracing(SERVICE_NAME, SERVICE_VERSION)
    server = await create_server(config, server_interceptors(), client_interceptors())
    try:
        await serve(server, config.server)
    finally:
        telemetry.shutdown()


if __name__ == "__main__":
    run(main)
