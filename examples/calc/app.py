"""The calc example: two arithmetic tools, built with componentize-py against wit/calc.wit."""

import wit_world
from componentize_py_types import Err


class WitWorld(wit_world.WitWorld):
    """Top-level exports of the `calc` world (componentize-py looks this class up by name)."""

    def add(self, a: int, b: int) -> int:
        """Sum of two s32 values, wrapped to 32 bits like the WIT type."""
        # Python ints do not overflow, but the s32 result must fit: wrap the way Rust/C would.
        total = (a + b) & 0xFFFF_FFFF
        return total - 0x1_0000_0000 if total >= 0x8000_0000 else total

    def divide(self, a: float, b: float) -> float:
        """Quotient of two f64 values; raising Err becomes the WIT `result`'s error case."""
        if b == 0:
            raise Err("division by zero")
        return a / b
