"""``segkit predict``: masks at input sizes, colour/overlay files, summary, all-or-nothing output."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

# tests/ is on sys.path (pytest's default rootdir-based import of the tests/<package> folders)
from conftest import tiny_checkpoint
from PIL import Image

from segkit.checkpoint import save_checkpoint
from segkit.cli import main


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("ckpt") / "best.pt"
    save_checkpoint(tiny_checkpoint(), path)
    return path


def write_images(folder: Path, sizes: dict[str, tuple[int, int]]) -> dict[str, Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = {}
    for index, (name, (height, width)) in enumerate(sizes.items()):
        paths[name] = folder / name
        pixels = np.random.default_rng(index).integers(0, 256, (height, width, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(paths[name])
    return paths


def listing(folder: Path) -> dict[str, bytes]:
    return {path.name: path.read_bytes() for path in sorted(folder.iterdir())}


def test_predict_files_folders_and_globs(tmp_path: Path, checkpoint: Path, capsys: pytest.CaptureFixture) -> None:
    write_images(tmp_path / "photos", {"a.png": (30, 41), "b.jpg": (52, 17)})
    write_images(tmp_path / "more", {"c.png": (9, 64), "d.bmp": (20, 20)})
    (tmp_path / "photos" / "notes.txt").write_text("not an image")
    out = tmp_path / "out"
    code = main(
        [
            "predict",
            str(checkpoint),
            str(tmp_path / "photos"),
            str(tmp_path / "more" / "*.png"),
            str(tmp_path / "more" / "d.bmp"),
            "--out",
            str(out),
            "--color",
            "--overlay",
            "--device",
            "cpu",
            "--batch-size",
            "3",
        ]
    )
    assert code == 0
    expected = {"a": (30, 41), "b": (52, 17), "c": (9, 64), "d": (20, 20)}
    assert sorted(p.name for p in out.iterdir()) == sorted(
        [f"{stem}{suffix}" for stem in expected for suffix in (".png", "_color.png", "_overlay.jpg")] + ["legend.png"]
    )
    for stem, size in expected.items():
        mask = Image.open(out / f"{stem}.png")
        assert mask.mode == "P" and mask.size == size[::-1]
        assert np.asarray(mask).max() < 3
        assert Image.open(out / f"{stem}_color.png").size == size[::-1]
        assert Image.open(out / f"{stem}_overlay.jpg").size == size[::-1]
    printed = capsys.readouterr().out
    for name in ("background", "red", "blue", "share", "images"):
        assert name in printed
    assert not list(tmp_path.glob(".out.*"))  # no staging folder left behind


def test_a_bad_image_is_named_the_others_written_and_the_folder_kept(
    tmp_path: Path, checkpoint: Path, capsys: pytest.CaptureFixture
) -> None:
    write_images(tmp_path / "in", {"a.png": (20, 20), "b.png": (20, 20)})
    (tmp_path / "in" / "c.png").write_bytes(b"\x89PNG broken")
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    (out / "a.png").write_bytes(b"previous result")
    code = main(["predict", str(checkpoint), str(tmp_path / "in"), "--out", str(out), "--device", "cpu"])
    assert code == 2
    assert "c.png: not a readable image" in capsys.readouterr().err
    assert sorted(listing(out)) == ["a.png", "b.png", "keep.txt"]
    assert (out / "keep.txt").read_text() == "mine" and Image.open(out / "a.png").size == (20, 20)
    assert not list(tmp_path.glob(".out.*"))
    # only unreadable images: nothing is written, nothing there is touched
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "x.png").write_bytes(b"")
    before = listing(out)
    assert main(["predict", str(checkpoint), str(tmp_path / "bad"), "--out", str(out), "--device", "cpu"]) == 2
    assert "nothing was written" in capsys.readouterr().err and listing(out) == before


def test_same_stem_twice_is_an_error_naming_both(
    tmp_path: Path, checkpoint: Path, capsys: pytest.CaptureFixture
) -> None:
    first = write_images(tmp_path / "x", {"scan.png": (10, 10)})["scan.png"]
    second = write_images(tmp_path / "y", {"scan.jpg": (10, 10)})["scan.jpg"]
    out = tmp_path / "out"
    assert main(["predict", str(checkpoint), str(first), str(second), "--out", str(out), "--device", "cpu"]) == 2
    error = capsys.readouterr().err
    assert str(first) in error and str(second) in error
    assert not out.exists()


def test_refuses_to_overwrite_its_inputs(tmp_path: Path, checkpoint: Path, capsys: pytest.CaptureFixture) -> None:
    images = write_images(tmp_path / "in", {"a.png": (10, 10)})
    before = images["a.png"].read_bytes()
    assert (
        main(["predict", str(checkpoint), str(tmp_path / "in"), "--out", str(tmp_path / "in"), "--device", "cpu"]) == 2
    )
    assert "would be overwritten" in capsys.readouterr().err
    assert images["a.png"].read_bytes() == before


def test_missing_inputs_and_bad_options(tmp_path: Path, checkpoint: Path, capsys: pytest.CaptureFixture) -> None:
    out = str(tmp_path / "out")
    assert main(["predict", str(checkpoint), str(tmp_path / "nothing*.png"), "--out", out]) == 2
    assert "matches no image files" in capsys.readouterr().err
    assert main(["predict", str(checkpoint), str(tmp_path / "absent.png"), "--out", out]) == 2
    assert "absent.png: not found" in capsys.readouterr().err
    image = write_images(tmp_path / "in", {"a.png": (10, 10)})["a.png"]
    assert main(["predict", str(checkpoint), str(image), "--out", out, "--threshold", "0.3", "--device", "cpu"]) == 2
    assert "binary checkpoint" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["predict", str(checkpoint), str(image), "--out", out, "--alpha", "2"])
    assert not Path(out).exists()


def test_binary_threshold_option(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    checkpoint = tmp_path / "binary.pt"
    save_checkpoint(tiny_checkpoint(["background", "crack"], binary=True), checkpoint)
    image = write_images(tmp_path / "in", {"a.png": (15, 25)})["a.png"]
    for threshold, value in (("0", 1), ("1", 0)):
        out = tmp_path / f"out{threshold}"
        assert (
            main(
                ["predict", str(checkpoint), str(image), "--out", str(out), "--threshold", threshold, "--device", "cpu"]
            )
            == 0
        )
        assert (np.asarray(Image.open(out / "a.png")) == value).all()
    assert "crack" in capsys.readouterr().out


def test_torchrun_shards_a_folder_across_ranks(tmp_path: Path) -> None:
    """`torchrun --nproc_per_node=2 -m segkit predict`: each rank predicts its share; all masks land in DIR."""
    save_checkpoint(tiny_checkpoint(), tmp_path / "model.pt")
    sizes = [(20, 30), (31, 17), (40, 40), (9, 50), (25, 25)]
    for index, (height, width) in enumerate(sizes):
        Image.fromarray(np.full((height, width, 3), 40 * index, np.uint8)).save(tmp_path / f"img{index}.png")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--standalone",
            "--nproc_per_node=2",
            "-m",
            "segkit",
            "predict",
            str(tmp_path / "model.pt"),
            *(str(tmp_path / f"img{i}.png") for i in range(5)),
            "--out",
            str(tmp_path / "out"),
            "--device",
            "cpu",
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert "rank 0 of 2: 3 images" in result.stderr and "rank 1 of 2: 2 images" in result.stderr
    for index, (height, width) in enumerate(sizes):
        assert Image.open(tmp_path / "out" / f"img{index}.png").size == (width, height)
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []


def test_unreadable_images_are_listed_at_once_and_the_rest_written(
    tmp_path: Path, checkpoint: Path, capsys: pytest.CaptureFixture
) -> None:
    images = write_images(tmp_path / "in", {"a.png": (12, 14), "c.png": (10, 10)})
    folder = images["a.png"].parent
    (folder / "b.jpg").write_bytes(b"not a jpeg at all")
    (folder / "d.png").write_bytes(b"")
    out = tmp_path / "out"
    assert main(["predict", str(checkpoint), str(folder), "--out", str(out), "--device", "cpu"]) == 2
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and "b.jpg: not a readable image" in error
    assert "1 more: d.png" in error and f"the masks of the other 2 images are in {out}" in error
    assert sorted(path.name for path in out.iterdir()) == ["a.png", "c.png"]
