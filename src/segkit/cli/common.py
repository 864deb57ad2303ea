"""Small argument helpers shared by several sub-commands."""

from __future__ import annotations

import ast
from typing import Any

from segkit.errors import SegkitError


def _split_top_level(text: str) -> list[str]:
    """Split on commas that are not inside brackets: ``"a=1,b=[2,3]"`` -> ``["a=1", "b=[2,3]"]``."""
    parts, depth, current = [], 0, []
    for char in text:
        depth += (char in "[(") - (char in "])")
        if char == "," and depth == 0:
            parts.append("".join(current))
            current = []
        else:
            current.append(char)
    parts.append("".join(current))
    return parts


def parse_model_kwargs(text: str) -> dict[str, Any]:
    """``"base_channels=16,decoder_channels=[16,8]"`` -> ``{"base_channels": 16, "decoder_channels": [16, 8]}``."""
    values: dict[str, Any] = {}
    for item in filter(None, (part.strip() for part in _split_top_level(text))):
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise SegkitError(None, f"--model-kwargs: expected KEY=VALUE, got {item!r}")
        try:
            values[key.strip()] = ast.literal_eval(raw.strip())
        except (ValueError, SyntaxError):
            values[key.strip()] = raw.strip()
    return values
