"""The products a new catalog database starts with: a small coffee and tea shop.

The data lives in seed_products.json beside this module, so editing the range
is a data change, not a code change.
"""

from __future__ import annotations

import json
from importlib import resources

from catalog.domain import Money, Product


def load_seed_products() -> tuple[Product, ...]:
    text = resources.files("catalog").joinpath("seed_products.json").read_text("utf-8")
    return tuple(
        Product(
            id=row["id"],
            name=row["name"],
            description=row["description"],
            category=row["category"],
            price=Money(**row["price"]),
        )
        for row in json.loads(text)
    )
