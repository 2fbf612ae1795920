"""Test clients that call the shop's services as one of its identities.

A service started with mTLS on (`start_stack(..., mtls=True)`) takes calls
only from a certificate of its stack's CA, and only for what mesh/policy.yaml
lets that certificate's identity call. A test therefore calls as the service
that would make the call in the shop: as the gateway for the public
services, as orders for inventory and payments. `channel` builds such a
channel from the certificates local mode made in the stack's certs folder;
with mTLS off it is a plaintext channel, so a test can run either way.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import grpc
import yaml

from localmode.topology import LocalService
from mesh.certs import cert_path, key_path
from mesh.config import Env
from mesh.policy import DEFAULT_POLICY_FILE, POLICY_FILE_VARIABLE
from mesh.tls import CA_NAME, MeshSecurity, channel_credentials, channel_options

# Who calls each service in the shop (mesh/policy.yaml).
CALLER_OF = {
    "catalog": "gateway",
    "orders": "gateway",
    "notifications": "gateway",
    "inventory": "orders",
    "payments": "orders",
}


def certs_dir(service: LocalService) -> Path:
    return Path(service.environment["MESH_CERTS_DIR"])


def security_as(service: LocalService, caller: str) -> MeshSecurity:
    """The mesh settings of `caller` in `service`'s stack (mTLS as the service has it)."""
    on = Env(dict(service.environment)).flag("MESH_MTLS", True)
    return MeshSecurity(enabled=on, certs_dir=certs_dir(service), service=caller if on else None)


def credentials(directory: Path, name: str, ca: str = CA_NAME) -> grpc.ChannelCredentials:
    """A client presenting `<name>.pem` and trusting `<ca>.pem`, both from `directory`
    (`name` may be one of the refused certificates mesh.certs writes for tests)."""
    return grpc.ssl_channel_credentials(
        root_certificates=cert_path(directory, ca).read_bytes(),
        private_key=key_path(directory, name).read_bytes(),
        certificate_chain=cert_path(directory, name).read_bytes(),
    )


def channel(
    service: LocalService,
    caller: str | None = None,
    *,
    options: Sequence[tuple[str, Any]] = (),
    interceptors: Sequence[grpc.aio.ClientInterceptor] = (),
) -> grpc.aio.Channel:
    """An aio channel to `service` as `caller` (default: its caller in the shop)."""
    target = str(service.grpc_target)
    security = security_as(service, caller or CALLER_OF[service.name])
    if not security.enabled:
        return grpc.aio.insecure_channel(target, options=options, interceptors=interceptors)
    return grpc.aio.secure_channel(
        target,
        channel_credentials(security),
        options=[*options, *channel_options(target, service.name)],
        interceptors=interceptors,
    )


def inspecting_policy(directory: Path) -> dict[str, str]:
    """The environment that points services at the shop's policy with one
    grant more: orders may call every method of inventory and payments.

    End-to-end tests read stock and payments back (GetStock, GetPayment) to
    check what a checkout left behind, calling as orders, whose grant in the
    shop's policy covers only the saga's steps. tests/mesh checks the shop's
    own policy, unchanged.
    """
    policy = yaml.safe_load(DEFAULT_POLICY_FILE.read_text())
    for service, package in (("inventory", "InventoryService"), ("payments", "PaymentsService")):
        policy["services"][service] = [
            {"callers": ["orders"], "methods": [f"shop.{service}.v1.{package}/*"]}
        ]
    path = directory / "inspecting-policy.yaml"
    directory.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(policy, sort_keys=False))
    return {POLICY_FILE_VARIABLE: str(path)}
