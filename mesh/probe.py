"""`python -m mesh.probe HOST:PORT [SERVICE]`: exits 0 if the gRPC health
service reports SERVING, 1 otherwise. Used by compose healthchecks and local
mode, so images need no separate probe binary."""

from __future__ import annotations

import sys

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc


def is_serving(target: str, service: str = "", timeout_s: float = 2.0) -> bool:
    with grpc.insecure_channel(target) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        try:
            reply = stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=timeout_s)
        except grpc.RpcError:
            return False
    return bool(reply.status == health_pb2.HealthCheckResponse.SERVING)


def main(argv: list[str]) -> int:
    if len(argv) not in (2, 3):
        print("usage: python -m mesh.probe HOST:PORT [SERVICE]", file=sys.stderr)
        return 2
    return 0 if is_serving(argv[1], argv[2] if len(argv) == 3 else "") else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv))
