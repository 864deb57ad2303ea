"""Regions of interest at predict time (``segkit predict --roi-masks``): predictions outside them are blacked out.

A model trained with ``--roi-masks`` never learnt what lies outside its regions (DRIVE's
retina outside the field of view); given the region masks of new images, prediction sets
every pixel outside them to the background class (the ignore value when class 0 is not a
background), so masks, colours, overlays and labelme files show the regions only.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from segkit.data.io import index_image_files
from segkit.data.masks import check_same_size, read_region
from segkit.errors import SegkitError


class Regions:
    """Each input image's region mask: in a folder by the image's name, or a path pattern with ``{id}`` (its stem).

    Args:
        spec: a folder (``fov/``: ``fov/<stem>.*``) or a pattern (``mask/{id}_mask.gif``).
        fill: the class index written outside the regions.
    """

    def __init__(self, spec: str | Path, fill: int) -> None:
        self.spec, self.fill = str(spec), fill
        self.by_stem: dict[str, Path] | None = None
        if "{id}" not in self.spec:
            self.by_stem = index_image_files(self.spec, recursive=False)

    def path_for(self, image: Path) -> Path | None:
        """The region mask of ``image``, or None when there is none."""
        if self.by_stem is not None:
            return self.by_stem.get(image.stem)
        path = Path(self.spec.replace("{id}", image.stem))
        return path if path.is_file() else None

    def check(self, images: Sequence[Path]) -> None:
        """Refuse, before anything is predicted, images without a region mask (every one named at once).

        Raises:
            SegkitError: naming the first image without one, and how many more.
        """
        missing = [image for image in images if self.path_for(image) is None]
        if missing:
            more = f" (and {len(missing) - 1} more images)" if len(missing) > 1 else ""
            raise SegkitError(
                missing[0], f"no region mask in {self.spec}{more}; --roi-masks names a folder or an {{id}} pattern"
            )

    def apply(self, image: Path, mask: np.ndarray) -> np.ndarray:
        """``mask`` with every pixel outside ``image``'s region set to :attr:`fill`.

        Raises:
            SegkitError: the region mask is unreadable or not of the image's size.
        """
        path = self.path_for(image)
        if path is None:
            raise SegkitError(image, f"no region mask in {self.spec}")
        region = read_region(path)
        check_same_size(path, region.shape, mask.shape)
        return np.where(region, mask, self.fill).astype(mask.dtype)
