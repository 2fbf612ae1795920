"""`python -m gateway`: wiring only: config, telemetry, server, serve."""

from __future__ import annotations

from gateway import SERVICE_NAME, SERVICE_VERSION
from gateway.config import GatewayConfig
from gateway.server import create_server
from mesh.config import Env
from mesh.run import run
from mesh.server import serve
from tracing.interceptors import client_interceptors, server_interceptors
from tracing.logs import configure_logging
from tracing.provider import configure_tracing


async def main() -> None:
    config = GatewayConfig.from_env(Env())
    configure_logging(SERVICE_NAME, config.log_level)
    telemetry = configure_tracing(SERVICE_NAME, SERVICE_VERSION)
    server = await create_server(config, server_interceptors(), client_interceptors())
    try:
        await serve(server.mesh, config.server)
    finally:
        await server.channels.close()
        telemetry.shutdown()


if __name__ == "__main__":
    run(main)
