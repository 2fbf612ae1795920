"""Domain errors of the catalog; `STATUSES` maps each to one gRPC status.

CatalogError            base class, never raised itself
├── InvalidArgument     a request field is wrong   -> INVALID_ARGUMENT
└── ProductNotFound     no product has that id     -> NOT_FOUND
"""

import grpc

from mesh.status import InvalidField, StatusTable


class CatalogError(Exception):
    """Base of every error the catalog reports to a caller."""


class InvalidArgument(InvalidField, CatalogError):
    """A request field is malformed; `field` names it as in the contract."""


class ProductNotFound(CatalogError):
    def __init__(self, product_id: str) -> None:
        super().__init__(f"no product with id {product_id!r}")
        self.product_id = product_id


STATUSES: StatusTable = {
    # Ours, and those of mesh.paging (page_size, page_token).
    InvalidField: grpc.StatusCode.INVALID_ARGUMENT,
    ProductNotFound: grpc.StatusCode.NOT_FOUND,
}
