"""The page ``segkit audit --out`` writes: one self-contained HTML file in the evaluation report's style.

It holds the counts of disputed regions by kind, the ranking of every image (a table to sort)
and, for the most suspect images, four panels each: the photo, the label and the prediction
over it, and the photo with the disputed regions outlined in their kind's colour. Rendered by
:func:`segkit.evaluation.html_report.render_page` from ``templates/audit.html.j2``, which
includes the report's stylesheet.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from segkit.files import atomic_write

ALPHA = 0.5  # opacity of the label and prediction over the photo
KIND_TEXT = {
    "missing": "an object the model sees where the label has background",
    "extra": "an object in the label where the model sees background",
    "wrong_class": "an object of another class in the label than in the prediction",
    "boundary": "a band along an object whose outline is off by more than a few pixels",
}


def write_audit_page(
    path: str | Path,
    result: Any,
    worst: Sequence[tuple[Any, Any]],
    *,
    classes: Sequence[str],
    palette: np.ndarray,
    background: int | None,
    kind_colours: Mapping[str, tuple[int, int, int]],
    sources: Sequence[tuple[str, str]],
    note: str = "",
) -> None:
    """Write the audit page to ``path``, atomically.

    Args:
        result: the :class:`~segkit.labelling.audit.AuditResult` (every image, most suspect first).
        worst: ``(audited image, panels)`` of the most suspect images, most suspect first; the panels
            have ``image``, ``labels``, ``prediction`` and ``outlined`` (RGB, the regions drawn).
        classes: class names in index order.
        palette: ``(C, 3)`` uint8 class colours.
        background: the background class, left undrawn over the photo (None: every class is drawn).
        kind_colours: the outline colour of each region kind.
        sources: ``(label, value)`` pairs saying what was audited.
        note: a remark shown at the top.
    """
    from segkit.evaluation.html_report import hex_colour, image_uri, render_page
    from segkit.visualize import overlay

    counts = result.kind_counts()
    gallery = []
    for item, shown in worst:
        panels = [("photo", image_uri(shown.image, photo=True))]
        for caption, mask in (("label", shown.labels), ("prediction", shown.prediction)):
            panels.append((caption, image_uri(overlay(shown.image, mask, ALPHA, palette, background), photo=True)))
        panels.append(("disputed regions", image_uri(shown.outlined, photo=True)))
        regions = [(region.describe(), hex_colour(kind_colours[region.kind])) for region in item.regions]
        gallery.append({"name": item.image.name, "mask": str(item.mask), "score": item.score, "regions": regions,
                        "panels": panels})  # fmt: skip
    context = {
        "title": "segkit label audit",
        "sources": list(sources),
        "note": note,
        "summary": [
            ("images", f"{len(result.images):,}"),
            ("with disputed regions", f"{sum(bool(item.regions) for item in result.images):,}"),
            *((kind.replace("_", " "), f"{count:,}") for kind, count in counts.items()),
        ],
        "kinds": [
            {"name": kind.replace("_", " "), "colour": hex_colour(colour), "text": KIND_TEXT[kind]}
            for kind, colour in kind_colours.items()
        ],
        "kind_names": list(kind_colours),
        "classes": [{"name": name, "colour": hex_colour(colour)} for name, colour in zip(classes, palette)],
        "rows": [
            {
                "rank": rank,
                "name": item.image.name,
                "score": item.score,
                "counts": [sum(region.kind == kind for region in item.regions) for kind in kind_colours],
                "summary": item.summary(),
            }
            for rank, item in enumerate(result.images, start=1)
        ],
        "worst": gallery,
    }
    html = render_page("audit.html.j2", context, package="segkit.labelling")
    atomic_write(path, lambda temp: temp.write_text(html, encoding="utf-8"))
