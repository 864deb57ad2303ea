"""File reading and writing: listing and globbing safely, output checks, failed writes, stale staging folders."""

from __future__ import annotations

import errno
import glob
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from segkit.data.io import (
    glob_image_files,
    index_image_files,
    peek_image,
    read_image,
    read_json,
    upright_rgb,
    write_mask,
)
from segkit.errors import SegkitError
from segkit.files import atomic_write, check_output_path, make_staging_dir, remove_stale_staging


def touch_png(path: Path, size: tuple[int, int] = (4, 3)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size).save(path)
    return path


@pytest.fixture
def looping(tmp_path: Path) -> Path:
    """g/a.png, g/sub/b.png, g/.hidden/c.png, and two symbolic-link loops that make ``glob('**')`` explode."""
    root = tmp_path / "g"
    touch_png(root / "a.png")
    touch_png(root / "sub" / "b.png")
    touch_png(root / ".hidden" / "c.png")
    (root / "sub" / "up").symlink_to("..")
    (root / "sub" / "self").symlink_to(".")
    (root / "loop.png").symlink_to("loop.png")
    return root


def relative(paths: list[Path], root: Path) -> list[str]:
    return [path.relative_to(root).as_posix() for path in paths]


def test_glob_matches_like_glob_without_walking_round_loops(looping: Path) -> None:
    found = glob_image_files(str(looping / "**" / "*.png"))
    assert relative(found, looping) == ["a.png", "loop.png", "sub/b.png"]  # the looping link is listed, once
    assert relative(glob_image_files(str(looping / "*.png")), looping) == ["a.png", "loop.png"]
    assert relative(glob_image_files(str(looping / "s?b" / "[ab].png")), looping) == ["sub/b.png"]
    assert glob_image_files(str(looping / "nothing" / "**" / "*.png")) == []


def test_glob_agrees_with_the_standard_glob_where_that_ends(tmp_path: Path) -> None:
    for name in ("x/1.png", "x/y/2.jpg", "x/y/z/3.PNG", "x/notes.txt", "top.png"):
        touch_png(tmp_path / name) if not name.endswith(".txt") else (tmp_path / name).write_text("x")
    for pattern in ("x/**/*.png", "x/**/*", "**/*.jpg", "x/*/*", "*.png"):
        ours = relative(glob_image_files(str(tmp_path / pattern)), tmp_path)
        theirs = sorted(
            Path(item).relative_to(tmp_path).as_posix()
            for item in glob.glob(str(tmp_path / pattern), recursive=True)
            if Path(item).suffix.lower() in (".png", ".jpg") and Path(item).is_file()
        )
        assert ours == theirs, pattern


def test_glob_of_a_symlink_loop_ends_quickly(looping: Path) -> None:
    """glob.glob('g/**/*.png') recurses through both loops (2**40 paths); this must finish at once."""
    code = (
        f"from segkit.data.io import glob_image_files; print(len(glob_image_files({str(looping / '**' / '*.png')!r})))"
    )
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parents[2] / "src")}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=30, env=env, check=True)
    assert done.stdout.strip() == "3"


def test_index_reports_or_raises_problems(looping: Path) -> None:
    touch_png(looping / "a.jpg")
    (looping / "gone.png").symlink_to("missing.png")
    problems: list[SegkitError] = []
    index = index_image_files(looping, problems=problems)
    assert list(index) == ["a", "sub/b"] and index["a"].name == "a.jpg"
    assert sorted(Path(error.path).name for error in problems) == ["a.png", "gone.png", "loop.png"]
    with pytest.raises(SegkitError, match="another file has the same name"):
        index_image_files(looping)
    assert list(index_image_files(looping / "sub", recursive=False)) == ["b"]
    with pytest.raises(SegkitError, match="folder not found"):
        index_image_files(looping / "missing")


def test_symlinked_folders_are_followed_once(tmp_path: Path) -> None:
    touch_png(tmp_path / "elsewhere" / "x.png")
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "linked").symlink_to(tmp_path / "elsewhere")
    (tmp_path / "data" / "again").symlink_to(tmp_path / "elsewhere")
    assert list(index_image_files(tmp_path / "data")) == ["again/x"]


@pytest.mark.parametrize(
    ("output", "inputs", "problem"),
    [
        ("ckpt/best.pt", ["ckpt/best.pt", "data"], "--json is an input"),
        ("data/masks/a.png", ["ckpt/best.pt", "data"], "--json is inside the input folder"),
        ("photos", ["photos/x.png"], "--json contains the input"),
        ("link", ["data"], "--json is an input"),
    ],
)
def test_outputs_that_would_clobber_inputs_are_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, output: str, inputs: list[str], problem: str
) -> None:
    monkeypatch.chdir(tmp_path)
    for folder in ("ckpt", "data/masks", "photos"):
        Path(folder).mkdir(parents=True)
    for file in ("ckpt/best.pt", "data/masks/a.png", "photos/x.png"):
        Path(file).write_bytes(b"x")
    Path("link").symlink_to("data")
    with pytest.raises(SegkitError, match=problem) as error:
        check_output_path(output, inputs, "--json")
    assert error.value.path == output
    check_output_path("ckpt/eval.json", ["ckpt/best.pt", "data"], "--json")  # beside an input file is fine


def test_atomic_write_into_a_folder_name_is_one_error(tmp_path: Path) -> None:
    (tmp_path / "out.json").mkdir()
    with pytest.raises(SegkitError, match="out.json: is a folder; give a file name"):
        atomic_write(tmp_path / "out.json", lambda temp: temp.write_text("{}"))


@pytest.mark.parametrize(
    ("failure", "problem"),
    [(OSError(errno.ENOSPC, "No space left on device"), "cannot write \\(the disk is full\\)"),
     (PermissionError(errno.EACCES, "Permission denied"), "cannot write \\(Permission denied\\)"),
     (OSError(errno.EROFS, "Read-only file system"), "cannot write \\(Read-only file system\\)")],
)  # fmt: skip
def test_failed_write_keeps_the_old_file_and_leaves_no_temporary(
    tmp_path: Path, failure: OSError, problem: str
) -> None:
    target = tmp_path / "mask.png"
    target.write_bytes(b"old")

    def fail(temp: Path) -> None:
        temp.write_bytes(b"half")
        raise failure

    with pytest.raises(SegkitError, match=problem) as error:
        atomic_write(target, fail)
    assert error.value.path == str(target)
    assert target.read_bytes() == b"old" and [p.name for p in tmp_path.iterdir()] == ["mask.png"]


def test_write_mask_still_writes(tmp_path: Path) -> None:
    write_mask(tmp_path / "sub" / "m.png", np.array([[0, 1], [2, 255]], np.uint8))
    assert np.asarray(Image.open(tmp_path / "sub" / "m.png")).tolist() == [[0, 1], [2, 255]]


def test_read_json_errors_are_one_line(tmp_path: Path) -> None:
    deep = tmp_path / "deep.json"
    deep.write_text("[" * 200_000 + "]" * 200_000)
    with pytest.raises(SegkitError, match="JSON nested too deeply to be a colour table"):
        read_json(deep, "colour table")
    with pytest.raises(SegkitError, match="is a folder, not a colour table"):
        read_json(tmp_path, "colour table")
    utf16 = tmp_path / "utf16.json"
    utf16.write_bytes('{"a": [1]}'.encode("utf-16"))
    assert read_json(utf16, "x") == {"a": [1]}


def test_peek_reads_the_header_and_refuses_bombs(tmp_path: Path) -> None:
    assert peek_image(touch_png(tmp_path / "a.png", (5, 2))) == ("RGB", (5, 2))
    (tmp_path / "notes.png").write_text("not an image")
    with pytest.raises(SegkitError, match="not a readable image"):
        peek_image(tmp_path / "notes.png")


def test_upright_rgb_applies_exif_orientation(tmp_path: Path) -> None:
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to display
    Image.new("RGB", (8, 4), (200, 10, 10)).save(tmp_path / "r.jpg", exif=exif.tobytes())
    with Image.open(tmp_path / "r.jpg") as image:
        assert upright_rgb(image).shape == (8, 4, 3)
    assert read_image(tmp_path / "r.jpg").shape == (8, 4, 3)


def test_staging_folder_names_hold_the_pid_and_stale_ones_go(tmp_path: Path) -> None:
    out = tmp_path / "out"
    dead = tmp_path / ".x.partial.999999999-abc"
    (dead / "m").mkdir(parents=True)
    (tmp_path / ".x.partial.notapid").mkdir()
    staging = make_staging_dir(out, ".x.partial.")
    assert staging.name.startswith(f".x.partial.{os.getpid()}-") and staging.is_dir()
    assert not dead.exists() and (tmp_path / ".x.partial.notapid").is_dir()
    assert remove_stale_staging(tmp_path, ".x.partial.") == []  # this process's own folder stays


def test_a_killed_process_leaves_a_folder_the_next_run_removes(tmp_path: Path) -> None:
    code = (
        "import os, sys; from pathlib import Path; from segkit.files import make_staging_dir; "
        f"make_staging_dir(Path({str(tmp_path / 'out')!r}), '.segkit-convert-'); os.kill(os.getpid(), 9)"
    )
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parents[2] / "src")}
    subprocess.run([sys.executable, "-c", code], env=env, timeout=60, check=False)
    left = [p.name for p in tmp_path.iterdir()]
    assert len(left) == 1 and left[0].startswith(".segkit-convert-")
    make_staging_dir(tmp_path / "out", ".segkit-convert-")
    assert left[0] not in [p.name for p in tmp_path.iterdir()]


def test_checkpoints_reach_the_disk_before_and_after_the_rename(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Checkpoints are written durably (fsync of the file, then of its folder); other files skip the cost."""
    from conftest import tiny_checkpoint

    from segkit.checkpoint import save_checkpoint
    from segkit.files import atomic_write

    synced: list[int] = []
    real = os.fsync
    monkeypatch.setattr(os, "fsync", lambda handle: (synced.append(handle), real(handle))[1])
    atomic_write(tmp_path / "mask.txt", lambda temp: temp.write_text("x"))
    assert synced == []
    save_checkpoint(tiny_checkpoint(), tmp_path / "best.pt")
    assert len(synced) == 2 and (tmp_path / "best.pt").stat().st_size > 0
