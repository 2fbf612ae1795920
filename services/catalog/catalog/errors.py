"""Domain errors of the catalog; the servicer maps each to one gRPC status.

CatalogError            base class, never raised itself
├── InvalidArgument     a request field is wrong   -> INVALID_ARGUMENT
└── ProductNotFound     no product has that id     -> NOT_FOUND
"""


class CatalogError(Exception):
    """Base of every error the catalog reports to a caller."""


class InvalidArgument(CatalogError):
    """A request field is malformed; `field` names it as in the contract."""

    def __init__(self, field: str, problem: str) -> None:
        super().__init__(f"{field}: {problem}")
        self.field = field
        self.problem = problem


class ProductNotFound(CatalogError):
    def __init__(self, product_id: str) -> None:
        super().__init__(f"no product with id {product_id!r}")
        self.product_id = product_id
