"""gRPC face of the catalog: protobuf in, domain call, protobuf out.

Every domain error maps to one status through `catalog.errors.STATUSES`;
anything else is turned into INTERNAL by the mesh's interceptor, so no client
sees UNKNOWN.
"""

from __future__ import annotations

from typing import Any

from catalog.domain import Catalog, Page, Product
from catalog.errors import STATUSES
from mesh.status import Context, maps_errors
from shop.catalog.v1 import catalog_pb2, catalog_pb2_grpc
from shop.common.v1 import common_pb2


def product_to_proto(product: Product) -> catalog_pb2.Product:
    return catalog_pb2.Product(
        id=product.id,
        name=product.name,
        description=product.description,
        category=product.category,
        price=common_pb2.Money(
            currency_code=product.price.currency_code,
            amount_minor=product.price.amount_minor,
        ),
    )


class CatalogServicer(catalog_pb2_grpc.CatalogServiceServicer):
    def __init__(self, catalog: Catalog) -> None:
        self._catalog = catalog

    @maps_errors(STATUSES)
    async def GetProduct(  # noqa: N802 (name fixed by the contract)
        self, request: catalog_pb2.GetProductRequest, context: Context
    ) -> catalog_pb2.GetProductResponse:
        product = await self._catalog.get_product(request.id)
        return catalog_pb2.GetProductResponse(product=product_to_proto(product))

    @maps_errors(STATUSES)
    async def ListProducts(  # noqa: N802
        self, request: catalog_pb2.ListProductsRequest, context: Context
    ) -> catalog_pb2.ListProductsResponse:
        page = await self._catalog.list_products(request.page_size, request.page_token)
        return catalog_pb2.ListProductsResponse(**_page_fields(page))

    @maps_errors(STATUSES)
    async def SearchProducts(  # noqa: N802
        self, request: catalog_pb2.SearchProductsRequest, context: Context
    ) -> catalog_pb2.SearchProductsResponse:
        page = await self._catalog.search_products(
            request.query, request.page_size, request.page_token
        )
        return catalog_pb2.SearchProductsResponse(**_page_fields(page))


def _page_fields(page: Page) -> dict[str, Any]:
    return {
        "products": [product_to_proto(p) for p in page.products],
        "next_page_token": page.next_page_token,
    }
