"""The ``segkit`` command line: parses arguments and calls the library.

Each sub-command lives in its own module of this package with two functions,
``add_parser(subparsers)`` and ``run(args) -> int``; nothing else happens here.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from collections.abc import Sequence

import segkit
from segkit.errors import OptionError, SegkitError

# Sub-command name -> module in segkit.cli (imported lazily so `segkit --help` stays fast).
COMMANDS: dict[str, str] = {
    "convert": "convert",
    "inspect": "inspect_cmd",
    "show": "show",
    "train": "train",
    "demo": "demo",
    "evaluate": "evaluate",
    "report": "report",
    "models": "models",
    "serve": "serve",
    "predict": "predict",
    "suggest": "suggest",
    "audit": "audit",
    "export": "export",
    "plan": "plan",
    "weights": "weights",
}


# Top-level module of an optional dependency -> the extra that installs it (``pip install "segkit[EXTRA]"``).
EXTRA_OF_MODULE: dict[str, str] = {
    **dict.fromkeys(
        ("torch", "torchvision", "albumentations", "segmentation_models_pytorch", "timm", "matplotlib"), "torch"
    ),
    **dict.fromkeys(("onnx", "onnxscript"), "export"),
    "onnxruntime": "onnx",
    **dict.fromkeys(("fastapi", "uvicorn", "starlette", "multipart", "python_multipart"), "serve"),
    **dict.fromkeys(("cleanlab", "scipy"), "audit"),
}


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The ``segkit`` parser: every sub-command, or only ``command`` when it names one.

    Building one sub-command keeps start-up short: the training options are generated from
    :class:`~segkit.config.TrainConfig`, whose imports (OpenCV, YAML) ``segkit evaluate
    --pred --true`` or ``segkit predict`` never need.
    """
    parser = argparse.ArgumentParser(
        prog="segkit", description="Semantic segmentation: convert, inspect, train, evaluate, predict."
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    parser.add_argument("--version", action="version", version=f"segkit {segkit.__version__}")
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, module_name in COMMANDS.items():
        if command in COMMANDS and name != command:
            continue
        module = importlib.import_module(f"segkit.cli.{module_name}")
        module.add_parser(subparsers)
    parser.set_defaults(commands=subparsers.choices)
    return parser


def _escape_unencodable_output() -> None:
    """Print file names that are not valid UTF-8 (PEP 383 surrogates) as ``\\udcXX`` instead of crashing.

    Python already does this for stderr; stdout is strict under UTF-8 locales.
    """
    for stream in (sys.stdout, sys.stderr):
        if getattr(stream, "errors", None) == "strict" and hasattr(stream, "reconfigure"):
            stream.reconfigure(errors="backslashreplace")


def _command_parser(args: argparse.Namespace) -> argparse.ArgumentParser:
    """The parser of the sub-command ``args`` were parsed by."""
    return args.commands[args.command]


def _named_command(argv: Sequence[str]) -> str | None:
    """The sub-command ``argv`` names: its first word that is not an option (top-level options take no value)."""
    first_word = next((word for word in argv if not word.startswith("-")), None)
    return first_word if first_word in COMMANDS else None


def main(argv: Sequence[str] | None = None) -> int:
    _escape_unencodable_output()
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = build_parser(_named_command(argv))
    args, unknown = parser.parse_known_args(argv)
    if unknown:  # reported with the sub-command's usage, not the top-level one
        _command_parser(args).error(f"unrecognized arguments: {' '.join(unknown)}")
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(message)s",
        stream=sys.stderr,
    )
    try:
        return int(args.func(args) or 0)
    except OptionError as error:  # shown like argparse's own errors: usage, message, exit 2
        _command_parser(args).error(error.problem)
    except SegkitError as error:
        print(f"segkit: error: {error}", file=sys.stderr)
        return int(getattr(error, "exit_code", 2))
    except KeyboardInterrupt:
        print("segkit: interrupted", file=sys.stderr)
        return 130
    except ModuleNotFoundError as error:
        extra = EXTRA_OF_MODULE.get((error.name or "").partition(".")[0])
        if extra is None:
            raise
        print(
            f"segkit: error: `segkit {args.command}` needs {error.name}, which this install lacks: "
            f"pip install 'segkit[{extra}]'",
            file=sys.stderr,
        )
        return 2
