"""Each command's options come from one declaration: its options dataclass's fields (help, defaults, checks).

The parser is generated from the fields, ``--help`` shows the fields' defaults, the library
function applies the same defaults when an option is not given, and a value out of range
is one line from the dataclass, whether it comes from the command line or the Python API.
"""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path
from typing import Any

import pytest

import segkit
from segkit.cli import build_parser, main
from segkit.data.options import ConvertLabelmeOptions, ConvertMasksOptions, InspectOptions, ShowOptions
from segkit.errors import OptionError, SegkitError
from segkit.evaluation.options import EvaluateOptions, ReportOptions
from segkit.exporters.options import ExportOptions
from segkit.labelling.options import AuditOptions, SuggestOptions
from segkit.options import collect
from segkit.prediction.options import OutputOptions
from segkit.serving.options import API_KEY_ENV, ConnectionLimits, ServeConfig, ServeOptions

DECLARED = [  # command line, the dataclass it is generated from
    (["serve"], ServeConfig),
    (["export"], ExportOptions),
    (["report"], ReportOptions),
    (["show"], ShowOptions),
    (["convert", "labelme"], ConvertLabelmeOptions),
    (["convert", "masks"], ConvertMasksOptions),
    (["predict"], OutputOptions),
    (["evaluate"], EvaluateOptions),
    (["inspect"], InspectOptions),
    (["suggest"], SuggestOptions),
    (["audit"], AuditOptions),
]
REQUIRED = {  # the arguments each command needs besides its options
    "audit": ["data"],
    "serve": ["m.pt"],
    "export": ["m.pt", "--out", "o.onnx"],
    "report": ["run"],
    "show": ["m.png"],
    "predict": ["m.pt", "a.png", "--out", "o"],
    "evaluate": [],
    "inspect": ["data"],
    "suggest": ["m.pt", "unlabeled/"],
}


def command_parser(words: list[str]) -> argparse.ArgumentParser:
    """The (sub-)sub-parser of ``segkit WORDS``."""
    parser = build_parser(words[0])
    for word in words:
        actions = [action for action in parser._actions if isinstance(action, argparse._SubParsersAction)]
        parser = actions[0].choices[word]
    return parser


def option_fields(cls: type) -> list[dataclasses.Field]:
    return [item for item in dataclasses.fields(cls) if item.metadata.get("cli")]


def one_line_error(argv: list[str], capsys: pytest.CaptureFixture[str]) -> str:
    """The command's one error line (its own, or the usage error of an OptionError); exit code 2."""
    capsys.readouterr()
    try:
        code = main(argv)
    except SystemExit as exit_:
        code = exit_.code  # type: ignore[assignment]
    assert code == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert lines[-1].startswith(("segkit: error: ", "usage: segkit", "segkit ")), lines
    return lines[-1].split("error: ", 1)[1]


@pytest.mark.parametrize(("words", "cls"), DECLARED, ids=lambda value: getattr(value, "__name__", None))
def test_every_option_is_a_field_with_its_help_and_default(words: list[str], cls: type) -> None:
    """Each field is an option of the command, with the field's help and its default in the help text."""
    parser = command_parser(words)
    by_dest = {action.dest: action for action in parser._actions}
    for item in option_fields(cls):
        action = by_dest[item.name]
        assert action.default is argparse.SUPPRESS, item.name  # not given: the dataclass's default applies
        assert action.help is not None and action.help.startswith(item.metadata["help"].replace("%", "%%"))
        default = item.default
        if default not in (None, False, ()):
            assert action.help.endswith(f"[default {default}]"), (item.name, action.help)


@pytest.mark.parametrize(("words", "cls"), DECLARED, ids=lambda value: getattr(value, "__name__", None))
def test_options_not_given_are_the_dataclass_defaults(words: list[str], cls: type) -> None:
    args = build_parser(words[0]).parse_args([*words, *REQUIRED.get(words[0], ["src", "out"])])
    assert collect(args, cls) == {}
    assert cls(**collect(args, cls)) == cls()


def test_serve_defaults_are_the_apps(monkeypatch: pytest.MonkeyPatch) -> None:
    """The app's settings and uvicorn's timeouts default to what ``segkit serve`` declares."""
    monkeypatch.delenv(API_KEY_ENV, raising=False)
    assert ServeConfig().serve_options() == ServeOptions()
    assert ServeConfig().connection_limits() == ConnectionLimits()
    assert ServeConfig(max_upload_mb=2, body_timeout=3).serve_options().max_upload_bytes == 2 * 2**20
    monkeypatch.setenv(API_KEY_ENV, "from-env")
    assert ServeConfig().serve_options().api_key == "from-env"


def test_repeated_and_listed_serve_options() -> None:
    args = build_parser("serve").parse_args(
        ["serve", "m.pt", "--cors-origin", "https://a.example", "--cors-origin", "https://b.example"]
        + ["--allowed-hosts", "a.example", "*.b.example", "--port", "9000"]
    )
    assert collect(args, ServeConfig) == {
        "cors_origin": ("https://a.example", "https://b.example"),
        "allowed_hosts": ("a.example", "*.b.example"),
        "port": 9000,
    }


@pytest.mark.parametrize(
    ("options", "problem"),
    [
        (["--max-queue", "0"], "--max-queue must be positive, not 0"),
        (["--batch-size", "0"], "--batch-size must be positive, not 0"),
        (["--body-timeout", "0"], "--body-timeout must be positive, not 0"),
        (["--batch-wait-ms", "-1"], "--batch-wait-ms must be at least 0, not -1"),
        (["--keep-alive", "0"], "--keep-alive must be positive, not 0"),
        (["--max-megapixels", "-2"], "--max-megapixels must be positive, not -2"),
        (["--max-upload-mb", "0"], "--max-upload-mb must be positive, not 0"),
        (["--workers", "0"], "--workers must be at least 1, not 0"),
        (["--port", "70000"], "--port must be between 0 and 65535, not 70000"),
        (["--api-key", "has space"], "--api-key must be 1 to 256 printable ASCII characters"),
    ],
)
def test_serve_values_out_of_range_are_one_line(
    options: list[str], problem: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Refused before the model is read or a port is bound, by the command and by ``segkit.serve`` alike."""
    assert one_line_error(["serve", str(tmp_path / "missing.pt"), *options], capsys).startswith(problem)
    flag, value = options[0].removeprefix("--").replace("-", "_"), options[1]
    field = next(item for item in dataclasses.fields(ServeConfig) if item.name == flag)
    with pytest.raises(SegkitError, match="^" + problem.replace("(", r"\(").replace(")", r"\)")):
        segkit.serve(
            tmp_path / "missing.pt", **{flag: field.metadata["parse"](value) if field.metadata["parse"] else value}
        )


def test_a_value_that_is_not_a_number_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert one_line_error(["serve", "m.pt", "--port", "http"], capsys).startswith("--port: invalid value 'http'")
    assert one_line_error(["export", "m.pt", "--out", "o.onnx", "--max-drop", "x"], capsys).startswith(
        "--max-drop: invalid value 'x'"
    )


@pytest.mark.parametrize(
    ("options", "keywords", "problem"),
    [
        (["--opset", "5"], {"opset": 5}, "--opset must be at least 7, not 5"),
        (["--max-drop", "1.5"], {"max_drop": 1.5}, "--max-drop must be between 0 and 1, not 1.5"),
        (["--calibration-images", "0"], {"calibration_images": 0}, "--calibration-images must be at least 1, not 0"),
        (["--force"], {"force": True}, "--force only apply with --quantize"),
        (["--fit-masks"], {"fit_masks": True}, "--fit-masks only apply with --quantize"),
        (
            ["--format", "hf", "--no-dynamic"],
            {"format": "hf", "dynamic": False},
            "--no-dynamic only apply to --format onnx",
        ),
    ],
)
def test_export_values_out_of_range_are_one_line(
    options: list[str], keywords: dict[str, Any], problem: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Checked by ExportOptions before the checkpoint is read: the same line from the command and ``segkit.export``."""
    out = tmp_path / "o.onnx"
    assert one_line_error(["export", str(tmp_path / "missing.pt"), "--out", str(out), *options], capsys).startswith(
        problem
    )
    with pytest.raises(OptionError) as error:
        segkit.export(tmp_path / "missing.pt", out, **keywords)
    assert str(error.value).startswith(problem)
    assert not out.exists()


def test_export_choices_are_checked_for_the_python_api_too() -> None:
    with pytest.raises(OptionError, match="--exporter must be one of auto, dynamo, torchscript, not 'fast'"):
        segkit.export("m.pt", "o.onnx", exporter="fast")
    with pytest.raises(OptionError, match="--quantize must be one of int8, not 'int4'"):
        ExportOptions(quantize="int4", calibration="data")


def test_report_and_show_values_out_of_range(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert one_line_error(["report", str(tmp_path), "--worst", "-1"], capsys) == "--worst must be at least 0, not -1"
    assert one_line_error(["report", str(tmp_path), "--batch-size", "0"], capsys) == (
        "--batch-size must be at least 1, not 0"
    )
    with pytest.raises(OptionError, match="--val-split only applies with --data"):
        segkit.report(tmp_path, val_split=0.2)
    with pytest.raises(OptionError, match="--alpha must be between 0 and 1, not -0.5"):
        ShowOptions(alpha=-0.5)


@pytest.mark.parametrize(
    ("argv", "call", "problem"),
    [
        (
            ["evaluate", "m.pt", "data", "--worst", "-1"],
            lambda: segkit.evaluate("m.pt", "data", worst=-1),
            "--worst must be at least 0, not -1",
        ),
        (
            ["evaluate", "m.pt", "data", "--val-split", "1.5"],
            lambda: segkit.evaluate("m.pt", "data", val_split=1.5),
            "--val-split must be in [0, 1), not 1.5",
        ),
        (
            ["inspect", "data", "--sheet-count", "0"],
            lambda: segkit.inspect("data", sheet_count=0),
            "--sheet-count must be at least 1, not 0",
        ),
        (
            ["predict", "m.pt", "a.png", "--out", "o", "--alpha", "0.3"],
            lambda: segkit.predict("m.pt", "a.png", "o", alpha=0.3),
            "--alpha sets the opacity of --overlay images: add --overlay",
        ),
        (
            ["predict", "m.pt", "a.png", "--out", "o", "--min-area", "4"],
            lambda: segkit.predict("m.pt", "a.png", "o", min_area=4),
            "--image-data, --polygon-tolerance and --min-area apply with --format labelme",
        ),
    ],
)
def test_own_options_of_evaluate_inspect_and_predict_out_of_range(
    argv: list[str],
    call: Any,
    problem: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Checked by the options dataclass before anything is read: the same line from the command and the function."""
    monkeypatch.chdir(tmp_path)
    assert one_line_error(argv, capsys).startswith(problem)
    with pytest.raises(OptionError) as error:
        call()
    assert str(error.value).startswith(problem)


def test_an_unknown_keyword_is_refused() -> None:
    with pytest.raises(TypeError, match="unexpected keyword argument 'prot'"):
        segkit.serve("m.pt", prot=80)
    with pytest.raises(TypeError, match="unexpected keyword argument 'opsett'"):
        segkit.export("m.pt", "o.onnx", opsett=17)
