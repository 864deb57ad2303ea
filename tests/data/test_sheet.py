"""The dataset contact sheet (segkit inspect --sheet) on real data and through the CLI."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from conftest import dataset_path
from PIL import Image

from segkit.cli import main
from segkit.data.sheet import contact_sheet, dataset_colours, sample_indices
from segkit.data.sources import open_source
from segkit.visualize import PAD_COLOR


def test_sample_indices_spread_over_the_dataset() -> None:
    assert sample_indices(72, 4) == [0, 24, 47, 71]
    assert sample_indices(3, 16) == [0, 1, 2]
    assert sample_indices(10, 1) == [0]


def test_sheet_of_real_aerial_tiles_in_the_dataset_colours(shared_datasets: Path) -> None:
    source = open_source(dataset_path(shared_datasets, "dubai_aerial"))
    colours = dataset_colours(source)
    assert colours.tolist()[:2] == [[60, 16, 152], [132, 41, 246]]  # classes.json: Building, Land
    sheet = contact_sheet(source, 6, columns=3, tile_side=96)
    assert sheet.dtype == np.uint8 and sheet.shape[2] == 3
    assert 3 * 2 * 96 < sheet.shape[1] < 3 * 2 * 96 + 80 and sheet.shape[0] > 2 * 96
    assert tuple(sheet[0, 0]) == PAD_COLOR
    legend_rows = sheet[-30:].reshape(-1, 3)
    for colour in colours.tolist():  # every class's swatch is in the legend at the bottom
        assert (legend_rows == colour).all(axis=1).any(), colour


def test_inspect_sheet_option(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rng = np.random.default_rng(0)
    for index in range(5):
        (tmp_path / "data" / "images").mkdir(parents=True, exist_ok=True)
        (tmp_path / "data" / "masks").mkdir(exist_ok=True)
        Image.fromarray(rng.integers(0, 255, (30, 40, 3), dtype=np.uint8)).save(
            tmp_path / "data" / "images" / f"{index}.png"
        )
        mask = np.zeros((30, 40), np.uint8)
        mask[5:15, 10:30] = 1
        Image.fromarray(mask).save(tmp_path / "data" / "masks" / f"{index}.png")
    (tmp_path / "data" / "images" / "broken.png").write_bytes(b"not a png")
    (tmp_path / "data" / "masks" / "broken.png").write_bytes(b"not a png")
    sheet = tmp_path / "sheet.png"
    assert main(["inspect", str(tmp_path / "data"), "--sheet", str(sheet), "--sheet-count", "3"]) == 0
    assert f"contact sheet: {sheet}" in capsys.readouterr().err
    assert Image.open(sheet).size[0] > 2 * 40
