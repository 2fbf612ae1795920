"""Builds the catalog's gRPC server from its configuration."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from catalog import SERVICE_NAME
from catalog.config import CatalogConfig
from catalog.domain import Catalog
from catalog.servicer import CatalogServicer
from catalog.store import SqliteProductStore
from mesh.interceptors import ServerInterceptor
from mesh.paging import PageTokens
from mesh.server import MeshServer, build_server
from shop.catalog.v1 import catalog_pb2, catalog_pb2_grpc

SERVICE_FULL_NAME = catalog_pb2.DESCRIPTOR.services_by_name["CatalogService"].full_name


@dataclass
class CatalogServer:
    mesh: MeshServer
    store: SqliteProductStore


async def create_server(
    config: CatalogConfig, interceptors: Sequence[ServerInterceptor] = ()
) -> CatalogServer:
    """Opens the store and returns a bound, not yet started, server (port 0 picks one)."""
    mesh = build_server(config.server, [SERVICE_FULL_NAME], interceptors, service=SERVICE_NAME)
    store = await SqliteProductStore.open(config.db_path)
    catalog = Catalog(store, PageTokens(config.page_token_key))
    catalog_pb2_grpc.add_CatalogServiceServicer_to_server(CatalogServicer(catalog), mesh.server)
    return CatalogServer(mesh=mesh, store=store)
