"""Class lists: which names a dataset's class indices carry, and which class is the background.

One home for the rules every command shares (``train``, ``evaluate``, ``inspect``,
``convert``, the model card): a class is the *background* only when it is named so,
never merely because it has index 0 (an aerial dataset's class 0 may be "Building").
"""

from __future__ import annotations

from collections.abc import Sequence

# Names that mark a background class (compared case-insensitively, surrounding space ignored).
BACKGROUND_NAMES = frozenset({"background", "_background_", "__background__", "bg"})


def is_background_name(name: str) -> bool:
    """Whether ``name`` names a background class (``background``, ``_background_``, ``bg`` ...)."""
    return name.strip().lower() in BACKGROUND_NAMES


def background_index(classes: Sequence[str]) -> int | None:
    """Index of the first class named as background, or ``None`` when no class is."""
    return next((index for index, name in enumerate(classes) if is_background_name(name)), None)
