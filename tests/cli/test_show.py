"""`segkit show`: colour previews and overlays of mask files."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from segkit.cli import main
from segkit.visualize import PALETTE

IDS = np.array([[0, 1, 2, 255], [3, 3, 1, 0]], dtype=np.uint8)


def save(path: Path, array: np.ndarray, mode: str | None = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    image = Image.fromarray(array)
    if mode == "P":
        image.putpalette([7] * 768)  # the stored indices, not these colours, are shown
    image.save(path)
    return path


def read(path: Path) -> np.ndarray:
    return np.asarray(Image.open(path))


def test_colour_previews_beside_each_mask(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    gray = save(tmp_path / "a.png", IDS)
    palette = save(tmp_path / "sub" / "b.png", IDS, mode="P")
    assert main(["show", str(gray), str(palette)]) == 0
    for written in (tmp_path / "a_color.png", tmp_path / "sub" / "b_color.png"):
        colour = read(written)
        np.testing.assert_array_equal(colour, PALETTE[IDS])
        assert colour[0, 0].tolist() == [0, 0, 0] and colour[0, 3].tolist() == [255, 255, 255]
    out = capsys.readouterr().out
    assert f"wrote {tmp_path / 'a_color.png'}" in out and "b_color.png" in out


def test_overlay_into_out_folder(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    mask = save(tmp_path / "masks" / "m.png", IDS)
    image = save(tmp_path / "images" / "m.jpg", np.full((2, 4, 3), 200, np.uint8))
    out = tmp_path / "previews"
    assert main(["show", str(mask), "--out", str(out), "--overlay", str(image), "--alpha", "1"]) == 0
    overlay = read(out / "m_overlay.png")
    assert overlay[0, 1].tolist() == PALETTE[1].tolist()  # alpha 1: pure class colour
    assert abs(int(overlay[0, 0, 0]) - 200) <= 2  # background keeps the (JPEG) image
    assert (out / "m_color.png").is_file()
    assert main(["show", str(mask), "--out", str(out), "--overlay", str(tmp_path / "images")]) == 0
    assert "m_overlay.png" in capsys.readouterr().out


def test_rgb_masks_need_colors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rgb = np.zeros((2, 2, 3), np.uint8)
    rgb[0, 0] = (10, 20, 30)
    mask = save(tmp_path / "rgb.png", rgb)
    assert main(["show", str(mask)]) == 2
    assert "pass --colors" in capsys.readouterr().err
    (tmp_path / "c.csv").write_text("bg,0,0,0\nthing,10,20,30\n")
    assert main(["show", str(mask), "--colors", str(tmp_path / "c.csv")]) == 0
    assert read(tmp_path / "rgb_color.png")[0, 0].tolist() == [10, 20, 30]  # the dataset's own colour


def test_errors_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    mask = save(tmp_path / "m.png", IDS)
    assert main(["show", str(tmp_path / "missing.png")]) == 2
    assert "missing.png: file not found" in capsys.readouterr().err
    save(tmp_path / "small.png", np.zeros((1, 1, 3), np.uint8))
    assert main(["show", str(mask), "--overlay", str(tmp_path / "small.png")]) == 2
    assert "mask is 4x2 but its image is 1x1" in capsys.readouterr().err
    with pytest.raises(SystemExit):  # an option out of range: shown with the usage, as argparse does
        main(["show", str(mask), "--alpha", "2"])
    assert "--alpha must be between 0 and 1" in capsys.readouterr().err


def test_dataset_colours_and_a_class_0_that_is_not_background(tmp_path: Path) -> None:
    """Beside a class file, masks are drawn in its colours; overlays colour class 0 when it is not a background."""
    (tmp_path / "masks").mkdir()
    (tmp_path / "class_names.txt").write_text("road\ncar\n")  # class 0 is a real class here
    mask = save(tmp_path / "masks" / "m.png", np.array([[0, 1]], np.uint8))
    image = save(tmp_path / "m.jpg", np.full((1, 2, 3), 200, np.uint8))
    assert main(["show", str(mask), "--overlay", str(image), "--alpha", "1"]) == 0
    coloured = read(tmp_path / "masks" / "m_color.png")
    assert coloured[0, 0].tolist() != [0, 0, 0]  # 'road' is not drawn as nothing
    overlay = read(tmp_path / "masks" / "m_overlay.png")
    assert overlay[0, 0].tolist() == coloured[0, 0].tolist()  # and it is coloured in the overlay
