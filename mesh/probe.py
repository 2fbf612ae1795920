"""`python -m mesh.probe [--plaintext] HOST:PORT [SERVICE]`: exits 0 if the gRPC
health service reports SERVING, 1 otherwise. Used by compose healthchecks and
local mode, so images need no separate probe binary.

With mesh mTLS on (`MESH_MTLS=on`, see `mesh.tls`) the probe runs inside the
service's container with the service's environment, so it calls over mTLS as
the service itself and expects the server to be that service (health is open
to every identity). `--plaintext` probes a public listener (the gateway's).
"""

from __future__ import annotations

import sys

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from mesh.config import ConfigError, Env
from mesh.tls import MeshSecurity, channel_credentials, channel_options


def _channel(target: str, security: MeshSecurity | None) -> grpc.Channel:
    if security is None or not security.enabled:
        return grpc.insecure_channel(target)
    options = channel_options(target, security.service)
    return grpc.secure_channel(target, channel_credentials(security), options=options)


def is_serving(
    target: str, service: str = "", timeout_s: float = 2.0, security: MeshSecurity | None = None
) -> bool:
    """Whether `target` reports `service` SERVING; over mTLS as `security` says, if on."""
    with _channel(target, security) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        try:
            reply = stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=timeout_s)
        except grpc.RpcError:
            return False
    return bool(reply.status == health_pb2.HealthCheckResponse.SERVING)


def main(argv: list[str], env: Env | None = None) -> int:
    args = argv[1:]
    plaintext = "--plaintext" in args
    args = [arg for arg in args if arg != "--plaintext"]
    if len(args) not in (1, 2):
        print("usage: python -m mesh.probe [--plaintext] HOST:PORT [SERVICE]", file=sys.stderr)
        return 2
    try:
        security = None if plaintext else MeshSecurity.from_env(env or Env())
    except ConfigError as error:
        print(f"configuration error: {error}", file=sys.stderr)
        return 2
    return 0 if is_serving(args[0], args[1] if len(args) == 2 else "", security=security) else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv))
