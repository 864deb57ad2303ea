"""Options written once: a dataclass field carries its help, choices, parser and command-line flag.

Configuration dataclasses (:class:`~segkit.config.TrainConfig` and the
:class:`~segkit.data.transforms.PreprocessConfig` it nests) declare each option with
:func:`option`; :func:`add_arguments` generates the ``argparse`` options from those fields
(as Hugging Face's ``HfArgumentParser`` does) and :func:`collect` turns the parsed
arguments back into a nested dict holding only what the user set, so the planner can
derive the rest. :func:`check_choices` validates values against the same choices, so the
allowed values of an option are defined in one place.
"""

from __future__ import annotations

import argparse
import dataclasses
from collections.abc import Callable
from typing import Any

MISSING: Any = dataclasses.MISSING


def option(
    default: Any = MISSING,
    *,
    default_factory: Callable[[], Any] | Any = MISSING,
    help: str,
    choices: tuple[Any, ...] | None = None,
    parse: Callable[[Any], Any] | None = None,
    metavar: str | None = None,
    nargs: str | int | None = None,
    group: str = "options",
    flag: str | None = None,
    action: str | None = None,
    aliases: tuple[str, ...] = (),
    cli: bool = True,
    planned: bool = False,
) -> Any:
    """A dataclass field that is also a command-line option.

    Args:
        default, default_factory: as :func:`dataclasses.field`.
        help: the option's help text (also its documentation).
        choices: the allowed values (checked on the command line and by :func:`check_choices`).
        parse: converts the command-line text (or list of texts with ``nargs``) to the value.
        metavar, nargs: as :meth:`argparse.ArgumentParser.add_argument`.
        group: the help section the option is listed in.
        flag: the option's name on the command line (default ``--field-name``).
        action: ``"store_true"`` (a switch without a ``--no-`` form) or ``"append"`` (repeatable,
            the values in a list); default: ``--flag/--no-flag`` for ``parse=bool``, else one value.
        aliases: other names of the option on the command line (``("--labels",)``).
        cli: ``False`` for fields that only config files and the Python API set.
        planned: the planner chooses the value when the user does not set it.
    """
    metadata = {
        "help": help,
        "choices": choices,
        "parse": parse,
        "metavar": metavar,
        "nargs": nargs,
        "group": group,
        "flag": flag,
        "action": action,
        "aliases": aliases,
        "cli": cli,
        "planned": planned,
    }
    return dataclasses.field(default=default, default_factory=default_factory, metadata=metadata)


def nested(factory: Callable[[], Any], *, flat: bool = False) -> Any:
    """A field holding another options dataclass, whose options appear on the command line flat.

    ``flat=True``: the inner options are also the outer class's keywords (``images``, not
    ``read.images``): :func:`collect` returns them beside the outer ones, as the library
    function takes them (e.g. the read options of ``segkit inspect``, beside its own).
    """
    return dataclasses.field(default_factory=factory, metadata={"nested": True, "flat": flat})


def check_choices(instance: Any, error: Callable[[str], Exception] | None = None) -> None:
    """Raise a one-line :class:`~segkit.errors.SegkitError` for a value outside its field's ``choices``.

    ``error`` makes the exception from the problem instead (e.g. :class:`~segkit.errors.OptionError`,
    shown with the command's usage). ``None`` is allowed where it is the field's default (an
    option not given).
    """
    from segkit.errors import SegkitError

    for item in dataclasses.fields(instance):
        choices = item.metadata.get("choices")
        value = getattr(instance, item.name)
        if choices is not None and value not in choices and not (value is None and item.default is None):
            flag = item.metadata.get("flag") or "--" + item.name.replace("_", "-")
            allowed = ", ".join(str(choice) for choice in choices)
            problem = f"{flag} must be one of {allowed}, not {value!r}"
            if error is not None:
                raise error(problem)
            raise SegkitError(None, problem)


def add_arguments(
    parser: argparse.ArgumentParser, cls: type, prefix: str = "", groups: dict[str, Any] | None = None
) -> None:
    """Add one ``--flag`` per command-line field of ``cls`` (nested dataclasses flattened), in field order.

    Options are added with ``default=argparse.SUPPRESS``: an option the user did not give
    is absent from the parsed namespace, which :func:`collect` relies on. Options are listed
    under their ``group`` headings (``groups`` maps heading -> argument group, shared
    across nested dataclasses; pass a command's own group to list fields among its options,
    or under its own title); the heading ``options`` is the parser's own, beside ``--help``.
    """
    groups = {} if groups is None else groups
    for item in dataclasses.fields(cls):
        if item.metadata.get("nested"):
            inner = prefix if item.metadata.get("flat") else prefix + item.name + "."
            add_arguments(parser, _nested_type(cls, item.name), inner, groups)
        elif item.metadata.get("cli", False):
            add_option(parser, prefix + item.name, item, groups)


def add_option(
    parser: argparse.ArgumentParser, dest: str, item: dataclasses.Field, groups: dict[str, Any] | None = None
) -> None:
    """Add the one option an :func:`option` field declares, as :func:`add_arguments` adds each (``dest``: its name).

    ``item`` may also be a field factory's unbound field (``data.options.split_option(...)``).
    """
    groups = {} if groups is None else groups
    meta = item.metadata
    group_name = meta["group"]
    if group_name not in groups:
        groups[group_name] = parser if group_name == "options" else parser.add_argument_group(group_name)
    flag = meta["flag"] or "--" + dest.rpartition(".")[2].replace("_", "-")
    kwargs: dict[str, Any] = {"dest": dest, "default": argparse.SUPPRESS, "help": _help(item)}
    if meta.get("action") == "store_true":
        kwargs["action"] = "store_true"
    elif meta["parse"] is bool:
        kwargs["action"] = argparse.BooleanOptionalAction
    else:
        if meta.get("action") is not None:
            kwargs["action"] = meta["action"]
        kwargs["metavar"] = meta["metavar"]
        if meta["nargs"] is not None:
            kwargs["nargs"] = meta["nargs"]
        if meta["choices"] is not None and meta["parse"] is None:
            kwargs["choices"] = meta["choices"]
    groups[group_name].add_argument(flag, *meta.get("aliases", ()), **kwargs)


def collect(args: argparse.Namespace, cls: type) -> dict[str, Any]:
    """The options the user gave, parsed, as a dict nested like ``cls`` (e.g. ``{"preprocess": {"img_size": ...}}``).

    A ``nested(..., flat=True)`` field's options come back beside the outer class's own.
    """
    given = vars(args)
    values: dict[str, Any] = {}
    _collect(given, cls, "", values)
    return values


def _collect(given: dict[str, Any], cls: type, prefix: str, values: dict[str, Any]) -> None:
    for item in dataclasses.fields(cls):
        if item.metadata.get("nested") and item.metadata.get("flat"):
            _collect(given, _nested_type(cls, item.name), prefix, values)
        elif item.metadata.get("nested"):
            inner: dict[str, Any] = {}
            _collect(given, _nested_type(cls, item.name), prefix + item.name + ".", inner)
            if inner:
                values[item.name] = inner
        elif item.metadata.get("cli") and prefix + item.name in given:
            raw = given[prefix + item.name]
            parse = item.metadata.get("parse")
            try:
                values[item.name] = parse(raw) if parse not in (None, bool) else raw
            except (ValueError, TypeError) as error:  # as argparse says a bad value: one line, with the usage
                from segkit.errors import OptionError

                flag = item.metadata.get("flag") or "--" + item.name.replace("_", "-")
                raise OptionError(f"{flag}: invalid value {raw!r} ({error})") from None


def _nested_type(cls: type, name: str) -> type:
    """The dataclass a nested field holds (from its default factory)."""
    item = next(item for item in dataclasses.fields(cls) if item.name == name)
    return type(item.default_factory())  # type: ignore[operator]


def _help(item: dataclasses.Field) -> str:
    """The help text, with the choices (when not listed by argparse) and the default."""
    text = item.metadata["help"]
    choices = item.metadata.get("choices")
    if choices is not None and item.metadata.get("parse") is not None:
        text += f" ({'|'.join(str(choice) for choice in choices)})"
    default = item.default_factory() if item.default_factory is not MISSING else item.default  # type: ignore[operator]
    shown = "x".join(map(str, default)) if isinstance(default, tuple) else default
    if hasattr(default, "to_dict"):
        shown = None
    meaningful = shown is not None and shown is not False and shown not in ("", {}, [])
    if item.metadata.get("planned"):
        text += " [planned" + (f"; without the planner {shown}" if meaningful else "") + "]"
    elif meaningful:
        text += f" [default {shown}]"
    return text.replace("%", "%%")
