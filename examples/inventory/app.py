"""The inventory example: records, enums, options and lists in and out, plus an exported interface."""

import wit_world
from wit_world import exports
from wit_world.imports.types import Category, Item, Quote

BULK_MIN_QUANTITY = 10
"""From this many units up, parts and materials are discounted."""
BULK_DISCOUNT = 0.10
"""Fraction taken off a bulk order."""


class WitWorld(wit_world.WitWorld):
    """Top-level exports of the `inventory` world (componentize-py looks this class up by name)."""

    def price_quote(self, item: Item, quantity: int) -> Quote:
        """Price `quantity` units of `item`, applying the bulk discount where it applies."""
        discounted = item.price is not None and item.category != Category.TOOL and quantity >= BULK_MIN_QUANTITY
        total = None
        if item.price is not None:
            total = item.price * quantity * (1 - BULK_DISCOUNT if discounted else 1)
            # Cents are the smallest unit a quote shows.
            total = round(total, 2)
        tags = [*item.tags, "bulk"] if discounted else list(item.tags)
        return Quote(item.name, item.category, quantity, total, discounted, tags)


class Catalog(exports.Catalog):
    """The exported `catalog` interface (componentize-py looks this class up by name)."""

    def describe(self, item: Item) -> str:
        """One line naming the item, its category, its price and its tags."""
        price = "no price" if item.price is None else f"{item.price:.2f} EUR"
        details = f"{item.category.name.lower()}, {price}"
        if item.tags:
            details += "; " + ", ".join(item.tags)
        return f"{item.name} ({details})"
