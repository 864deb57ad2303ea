"""Small argument helpers shared by several sub-commands."""

from __future__ import annotations

import ast
from typing import Any

from segkit.errors import SegkitError


def parse_model_kwargs(text: str) -> dict[str, Any]:
    """``"base_channels=16,upsampling=transpose"`` -> ``{"base_channels": 16, "upsampling": "transpose"}``."""
    values: dict[str, Any] = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise SegkitError(None, f"--model-kwargs: expected KEY=VALUE, got {item!r}")
        try:
            values[key.strip()] = ast.literal_eval(raw.strip())
        except (ValueError, SyntaxError):
            values[key.strip()] = raw.strip()
    return values
