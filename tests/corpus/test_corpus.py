"""Every corpus entry through every command it is declared for (see make_corpus.ENTRIES), and every
hostile model file (hostile_models.MODEL_ENTRIES) through every command that loads a model.

An entry either succeeds, with its output checked (masks at the displayed image
size), or fails the way a user must see it fail: exit code 2, stderr exactly one
line ``segkit: error: ...`` naming the offending file, no traceback, and nothing
written (the output folder absent afterwards, or byte-identical when it existed,
and no temporary folder left beside it). ``inspect`` lists problems instead (exit
0); the server answers 4xx with a JSON error and keeps answering.

The CLI runs in this process through ``segkit.cli.main`` (fast); a few entries
also run through ``python -m segkit`` to show the same from the shell.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import os
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
from PIL import Image

from segkit.cli import main

from .conftest import TRAIN_ARGS, Corpus
from .hostile_models import MODEL_ENTRIES, MODEL_ENTRY_BY_NAME, ModelEntry
from .make_corpus import BASE, CLASSES, ENTRIES, ENTRY_BY_NAME, SIZE, Entry, Outcome

ERROR_PREFIX = "segkit: error: "
OUT = "out"  # the output folder inside each test's work folder


def entries(command: str) -> list:
    """``(entry, outcome)`` parameters of every entry fed to ``command``, with the entry's name as id."""
    return [pytest.param(entry, entry.expect[command], id=entry.name) for entry in ENTRIES if command in entry.expect]


def printable(name: str) -> str:
    """How a file name appears in segkit's output: bytes that are not UTF-8 as ``\\udcXX`` escapes."""
    return name.encode("utf-8", "backslashreplace").decode("utf-8")


# ---------------------------------------------------------------------- running the CLI
@dataclass
class Result:
    code: int
    out: str
    err: str


def run_cli(argv: list[str], capsys: pytest.CaptureFixture[str]) -> Result:
    """``segkit.cli.main(argv)`` as from the shell: its log lines go to its own stderr.

    pytest keeps a handler on the root logger, which would make main()'s
    ``logging.basicConfig`` do nothing; it is set aside for the call so that every
    line segkit logs is in ``err``, as it would be in a terminal.
    """
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    root.handlers.clear()
    capsys.readouterr()
    try:
        code = main(argv)
    except SystemExit as exit_:  # argparse rejects the arguments
        code = exit_.code
    finally:
        root.handlers[:] = handlers
        root.setLevel(level)
    captured = capsys.readouterr()
    return Result(int(code or 0), captured.out, captured.err)


def assert_ok(result: Result) -> None:
    assert result.code == 0, result.err
    assert "Traceback" not in result.err and ERROR_PREFIX not in result.err, result.err


def assert_error(result: Result, expect: Outcome) -> None:
    """Exit 2; stderr is one line ``segkit: error: ...`` naming the file."""
    lines = result.err.splitlines()
    assert result.code == 2, result
    assert len(lines) == 1, f"expected one line on stderr, got:\n{result.err}"
    assert lines[0].startswith(ERROR_PREFIX), lines[0]
    assert printable(expect.name) in lines[0], lines[0]


def snapshot(folder: Path) -> dict[str, bytes | None]:
    """Every path under ``folder`` (hidden ones too) -> file bytes (None for folders)."""
    state: dict[str, bytes | None] = {}
    for path in sorted(folder.rglob("*")):
        state[path.relative_to(folder).as_posix()] = None if path.is_dir() else path.read_bytes()
    return state


def assert_refused(argv: list[str], expect: Outcome, work: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The command fails naming the file and leaves ``work`` (where its output goes) exactly as it was."""
    before = snapshot(work)
    assert_error(run_cli(argv, capsys), expect)
    assert snapshot(work) == before


def prefill(folder: Path, files: dict[str, bytes]) -> None:
    """Results of an earlier run that a failed command must leave alone."""
    for name, data in files.items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_bytes(data)


def image_sizes(folder: Path) -> dict[str, tuple[int, int]]:
    """``stem -> (width, height)`` of every file in ``folder`` (each must be an image)."""
    sizes = {}
    for path in folder.iterdir():
        with Image.open(path) as image:
            sizes[path.stem] = image.size
    return sizes


def only_output(work: Path, name: str = OUT) -> None:
    """A successful command left its output and no temporary sibling."""
    assert [path.name for path in work.iterdir()] == [name]


@pytest.fixture
def work(tmp_path: Path) -> Path:
    """An empty folder that receives the command's output (and nothing else)."""
    folder = tmp_path / "work"
    folder.mkdir()
    return folder


# ------------------------------------------------------------------ argument builders
# One function per command: (entry, its folder, work folder, checkpoint) -> argv; the
# in-process tests and the shell tests use the same ones.
ArgvBuilder = Callable[[Entry, Path, Path, Path], list[str]]


def convert_argv(entry: Entry, folder: Path, work: Path, checkpoint: Path) -> list[str]:
    return ["convert", "labelme", str(folder / entry.labelme), str(work / OUT)]


def inspect_argv(entry: Entry, folder: Path, work: Path, checkpoint: Path) -> list[str]:
    return ["inspect", str(folder / entry.data)]


def train_argv(entry: Entry, folder: Path, work: Path, checkpoint: Path) -> list[str]:
    return ["train", str(folder / entry.data), "--out", str(work / OUT), *TRAIN_ARGS]


def predict_argv(entry: Entry, folder: Path, work: Path, checkpoint: Path) -> list[str]:
    inputs = [str(folder / item) for item in entry.predict_inputs]
    # one image per batch: the good image's mask is made (and staged) before the bad one is read
    return ["predict", str(checkpoint), *inputs, "--out", str(work / OUT), "--batch-size", "1", "--device", "cpu"]


def evaluate_argv(entry: Entry, folder: Path, work: Path, checkpoint: Path) -> list[str]:
    return ["evaluate", str(checkpoint), str(folder / entry.data), "--json", str(work / "eval.json"), "--device", "cpu"]


def evaluate_folders_argv(entry: Entry, folder: Path, work: Path, checkpoint: Path) -> list[str]:
    folders = ["--pred", str(folder / entry.pred), "--true", str(folder / entry.true)]
    return ["evaluate", *folders, "--num-classes", str(len(CLASSES)), "--json", str(work / "eval.json")]


# ---------------------------------------------------------------------------- commands
@pytest.mark.parametrize(("entry", "expect"), entries("convert"))
def test_convert(entry: Entry, expect: Outcome, corpus: Corpus, work: Path, capsys: pytest.CaptureFixture[str]) -> None:
    argv = convert_argv(entry, corpus.entry(entry.name), work, Path())
    if expect.kind == "error":
        assert_refused(argv, expect, work, capsys)
        prefill(work / OUT, {"class_names.txt": b"earlier\n", "masks/a.png": b"earlier mask"})
        assert_refused([*argv, "--overwrite"], expect, work, capsys)
        return
    assert_ok(run_cli(argv, capsys))
    out = work / OUT
    assert image_sizes(out / "masks") == entry.sizes
    assert image_sizes(out / "images") == entry.sizes
    # labelme's labels.txt names the classes when there is one; else every label found, background first
    listed = corpus.entry(entry.name) / entry.labelme / "labels.txt"
    expected = list(CLASSES) if listed.exists() else ["_background_", "cat", "dog"]
    assert (out / "class_names.txt").read_text(encoding="utf-8").splitlines() == expected
    only_output(work)


@pytest.mark.parametrize(("entry", "expect"), entries("inspect"))
def test_inspect(entry: Entry, expect: Outcome, corpus: Corpus, capsys: pytest.CaptureFixture[str]) -> None:
    argv = inspect_argv(entry, corpus.entry(entry.name), Path(), Path())
    result = run_cli([*argv, "--json"], capsys)
    if expect.kind == "error":
        assert_error(result, expect)
        return
    assert_ok(result)
    report = json.loads(result.out)
    if expect.kind == "ok":
        assert report["problems"] == []
        assert report["num_pairs"] == entry.pairs
        assert {key: report[key] for key in entry.report} == entry.report
        return
    named = [item for item in report["problems"] if expect.name in item["file"]]
    assert named, report["problems"]
    table = run_cli(argv, capsys)  # the text report names the file too, on one line
    assert_ok(table)
    assert any(printable(expect.name) in line and named[0]["problem"] in line for line in table.out.splitlines())


@pytest.mark.parametrize(("entry", "expect"), entries("train"))
def test_train(entry: Entry, expect: Outcome, corpus: Corpus, work: Path, capsys: pytest.CaptureFixture[str]) -> None:
    argv = train_argv(entry, corpus.entry(entry.name), work, Path())
    if expect.kind == "error":
        assert_refused(argv, expect, work, capsys)
        return
    assert_ok(run_cli(argv, capsys))
    from segkit.checkpoint import load_checkpoint

    assert load_checkpoint(work / OUT / "best.pt").card.classes[1:] == list(CLASSES[1:])
    with open(work / OUT / "history.csv", encoding="utf-8") as handle:
        assert [row["epoch"] for row in csv.DictReader(handle)] == ["1"]
    if entry.val_pairs is not None:  # validated on the dataset's validation split, not a share of train/
        assert json.loads((work / OUT / "metrics.json").read_text(encoding="utf-8"))["num_images"] == entry.val_pairs
    only_output(work)


@pytest.mark.parametrize(("entry", "expect"), entries("predict"))
def test_predict(
    entry: Entry, expect: Outcome, corpus: Corpus, checkpoint: Path, work: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = predict_argv(entry, corpus.entry(entry.name), work, checkpoint)
    if expect.kind == "error":
        # an unreadable image is named (exit 2) after the masks of the readable ones are written; other files stay
        prefill(work / OUT, {"notes.txt": b"keep me"})
        assert_error(run_cli(argv, capsys), expect)
        assert (work / OUT / "notes.txt").read_bytes() == b"keep me"
        written = [path for path in (work / OUT).iterdir() if path.name != "notes.txt"]
        assert all(path.suffix == ".png" and Image.open(path).size == SIZE for path in written)
        only_output(work)
        return
    assert_ok(run_cli(argv, capsys))
    assert image_sizes(work / OUT) == entry.sizes
    assert {path.suffix for path in (work / OUT).iterdir()} == {".png"}
    only_output(work)


@pytest.mark.parametrize(("entry", "expect"), entries("evaluate"))
def test_evaluate(
    entry: Entry, expect: Outcome, corpus: Corpus, checkpoint: Path, work: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = evaluate_argv(entry, corpus.entry(entry.name), work, checkpoint)
    if expect.kind == "error":
        assert_refused(argv, expect, work, capsys)
        prefill(work, {"eval.json": b'{"earlier": true}'})
        assert_refused(argv, expect, work, capsys)
        return
    assert_ok(run_cli(argv, capsys))
    metrics = json.loads((work / "eval.json").read_text(encoding="utf-8"))
    assert metrics["num_images"] == (entry.pairs if entry.eval_pairs is None else entry.eval_pairs)
    assert 0.0 <= metrics["pixel_accuracy"] <= 1.0
    only_output(work, "eval.json")


@pytest.mark.parametrize(("entry", "expect"), entries("evaluate-folders"))
def test_evaluate_folders(
    entry: Entry, expect: Outcome, corpus: Corpus, work: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = evaluate_folders_argv(entry, corpus.entry(entry.name), work, Path())
    if expect.kind == "error":
        assert_refused(argv, expect, work, capsys)
        return
    assert_ok(run_cli(argv, capsys))
    metrics = json.loads((work / "eval.json").read_text(encoding="utf-8"))
    assert metrics["num_images"] == entry.pairs
    assert metrics["pixel_accuracy"] == 1.0  # the predictions are the true masks
    only_output(work, "eval.json")


@pytest.mark.parametrize(("entry", "expect"), entries("serve"))
def test_serve(entry: Entry, expect: Outcome, corpus: Corpus, client) -> None:
    upload = corpus.entry(entry.name) / entry.upload
    files = {"file": (printable(upload.name), upload.read_bytes(), entry.upload_type)}
    response = client.post("/predict", files=files)
    assert response.status_code == expect.status, response.text
    if expect.status == 200:
        with Image.open(io.BytesIO(response.content)) as mask:
            assert mask.size == entry.sizes[upload.stem]
    else:
        assert response.headers["content-type"] == "application/json"
        detail = response.json()["detail"]
        assert isinstance(detail, str) and detail and "\n" not in detail
    assert client.get("/health").json() == {"status": "ok"}


# ------------------------------------------------------------------------ from the shell
SHELL_CASES = [
    pytest.param("truncated_png", predict_argv, id="predict-truncated_png"),
    pytest.param("labelme_invalid_json", convert_argv, id="convert-labelme_invalid_json"),
    pytest.param("truncated_not_utf8_name", inspect_argv, id="inspect-truncated_not_utf8_name"),
]


@pytest.mark.parametrize(("name", "build_argv"), SHELL_CASES)
def test_from_the_shell(name: str, build_argv: ArgvBuilder, corpus: Corpus, checkpoint: Path, work: Path) -> None:
    """``python -m segkit``: the exit code and stderr the shell sees, under a strict UTF-8 locale."""
    entry = ENTRY_BY_NAME[name]
    command = build_argv.__name__.removesuffix("_argv")
    expect = entry.expect[command]
    argv = build_argv(entry, corpus.entry(name), work, checkpoint)
    env = {**os.environ, "PYTHONIOENCODING": "utf-8:strict", "OMP_NUM_THREADS": "1"}
    completed = subprocess.run(
        [sys.executable, "-m", "segkit", *argv], capture_output=True, env=env, timeout=120, check=False
    )
    result = Result(completed.returncode, completed.stdout.decode("utf-8"), completed.stderr.decode("utf-8"))
    if expect.kind == "error":
        assert_error(result, expect)
        assert snapshot(work) == {}
    else:  # inspect lists the problem on stdout, the name escaped rather than crashing the encoder
        assert_ok(result)
        assert printable(expect.name) in result.out


# ------------------------------------------------------------------ hostile model files
MODEL_COMMANDS = {  # command -> argv after the model file (work: the output folder's parent)
    "predict": lambda corpus, work: [str(corpus.root / BASE / "images"), "--out", str(work / OUT), "--device", "cpu"],
    "evaluate": lambda corpus, work: [str(corpus.root / BASE), "--json", str(work / "eval.json"), "--device", "cpu"],
    "export": lambda corpus, work: ["--out", str(work / "model.onnx")],
    # start-up only: from the shell, with a time-out (in this process an accepted model would serve forever)
    "serve": lambda corpus, work: ["--port", "0", "--device", "cpu"],
}
IN_PROCESS = ("predict", "evaluate", "export")
PEAK_MEMORY_LIMIT = 2 * 2**30
MEASURED = ("model_deflated_bomb", "model_input_at_area_limit")  # in their own processes: peak memory and time


@pytest.fixture(scope="session")
def hostile_models(checkpoint: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("hostile_models")
    for entry in MODEL_ENTRIES:
        entry.build(checkpoint, folder / f"{entry.name}.pt")
    return folder


@pytest.mark.parametrize("command", IN_PROCESS)
@pytest.mark.parametrize("entry", MODEL_ENTRIES, ids=lambda entry: entry.name)
def test_hostile_model(
    entry: ModelEntry,
    command: str,
    corpus: Corpus,
    hostile_models: Path,
    work: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    model = hostile_models / f"{entry.name}.pt"
    argv = [command, str(model), *MODEL_COMMANDS[command](corpus, work)]
    before = snapshot(work)
    result = run_cli(argv, capsys)
    assert_error(result, Outcome("error", model.name))
    assert entry.phrase in result.err and snapshot(work) == before


MEASURE = """
import json, resource, subprocess, sys, time
start = time.monotonic()
done = subprocess.run(sys.argv[1:], capture_output=True, text=True, timeout=120)
print(json.dumps({"code": done.returncode, "err": done.stderr, "seconds": time.monotonic() - start,
                  "peak": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024}))
"""


@pytest.mark.parametrize("command", list(MODEL_COMMANDS))
@pytest.mark.parametrize("name", MEASURED)
def test_hostile_models_are_refused_cheaply(
    name: str, command: str, corpus: Corpus, hostile_models: Path, work: Path
) -> None:
    """From the shell: exit 2 and one line, in seconds, peak memory under 2 GiB (the file asks for far more)."""
    model = hostile_models / f"{name}.pt"
    argv = [sys.executable, "-m", "segkit", command, str(model), *MODEL_COMMANDS[command](corpus, work)]
    measured = json.loads(
        subprocess.run([sys.executable, "-c", MEASURE, *argv], capture_output=True, text=True, check=True).stdout
    )
    assert measured["code"] == 2 and len(measured["err"].splitlines()) == 1, measured["err"]
    assert MODEL_ENTRY_BY_NAME[name].phrase in measured["err"]
    assert measured["peak"] < PEAK_MEMORY_LIMIT and measured["seconds"] < 60, measured
