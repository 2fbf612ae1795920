"""Which product each bench order buys, so that no order finds its product sold out.

inventory has no restock call and a new one holds seed_stock.json's units
(3,437 over 36 products, from 2 to 190 each): one product alone runs out
within a few hundred orders, and a sold-out order is a cancelled order whose
saga is shorter, which would flatter the figures. A StockPool reads what
inventory holds and hands out one unit at a time, always of the product with
the most units left, so the orders spread over every product and never ask
for a unit that is not there (each order buys one unit of one product).
"""

from __future__ import annotations

import heapq
import json
from collections.abc import Mapping

import grpc

from localmode.topology import REPO_ROOT
from shop.inventory.v1 import inventory_pb2, inventory_pb2_grpc

__all__ = ["SEED", "OutOfStock", "StockPool", "seed_products"]

SEED = REPO_ROOT / "services" / "inventory" / "internal" / "stock" / "seed_stock.json"
MAX_IDS = 100  # GetStock takes at most this many ids per call


class OutOfStock(RuntimeError):
    """Every unit the pool started with has been handed out."""


def seed_products() -> list[str]:
    """Every product a new inventory stocks."""
    return [row["product_id"] for row in json.loads(SEED.read_text())]


class StockPool:
    """Units to buy, one at a time, the product with the most left first."""

    def __init__(self, levels: Mapping[str, int]) -> None:
        self.total = sum(max(0, units) for units in levels.values())
        self.taken = 0
        # A max-heap by units left; the id breaks ties, so the order is deterministic.
        self._heap = [(-units, product) for product, units in levels.items() if units > 0]
        heapq.heapify(self._heap)

    @classmethod
    def from_inventory(cls, target: str, products: list[str] | None = None) -> StockPool:
        """What the inventory at `target` (plaintext) has available now."""
        ids = seed_products() if products is None else products
        levels: dict[str, int] = {}
        with grpc.insecure_channel(target) as channel:
            stub = inventory_pb2_grpc.InventoryServiceStub(channel)
            for start in range(0, len(ids), MAX_IDS):
                request = inventory_pb2.GetStockRequest(product_ids=ids[start : start + MAX_IDS])
                reply = stub.GetStock(request, timeout=10)
                levels.update({s.product_id: s.available for s in reply.stock_levels})
        return cls(levels)

    @property
    def remaining(self) -> int:
        return self.total - self.taken

    def take(self) -> str:
        """One unit's product; raises OutOfStock once none is left."""
        if not self._heap:
            raise OutOfStock(
                f"all {self.total} units in stock are taken: the bench places more orders"
                " than inventory holds (fewer calls or rates, or a new inventory)"
            )
        units, product = heapq.heappop(self._heap)
        if units < -1:
            heapq.heappush(self._heap, (units + 1, product))
        self.taken += 1
        return product
