"""Label maps: many labelme labels to one class (``--label-map FILE``), and the map instance-numbered labels suggest.

People label objects as ``bottle1`` … ``bottle54``, ``battery_1``, ``paper box_2``: one class
per kind of object, numbered per instance. A label map is a YAML or JSON mapping of
``label: class``; a key is the label itself or a regular expression the whole label matches
(``'bottle[_ ]?\\d+': bottle``). Rules are tried in file order, exact keys first; a label no
rule matches stays itself. :func:`suggest_label_map` writes the map a set of labels calls for.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import yaml

from segkit.data.io import read_text
from segkit.errors import SegkitError

# A label ending in digits, after an optional separator: "bottle12", "battery_1", "paper box-3".
_NUMBERED = re.compile(r"(?P<stem>.*?[^\d\s_-])[\s_-]*\d+")
SUGGESTED_FILE = "label_map.suggested.yaml"


@dataclass(frozen=True)
class LabelMap:
    """Label -> class rules read from a file (see the module's description)."""

    rules: tuple[tuple[str, re.Pattern[str], str], ...]
    source: Path | None = None

    def __call__(self, label: str) -> str:
        """The class of ``label`` (itself when no rule matches)."""
        for key, _, target in self.rules:
            if label == key:
                return target
        for _, pattern, target in self.rules:
            if pattern.fullmatch(label):
                return target
        return label

    @classmethod
    def from_mapping(cls, mapping: dict[str, str], source: Path | None = None) -> LabelMap:
        """Rules from a ``{label or regular expression: class}`` mapping.

        Raises:
            SegkitError: a key or value that is not a string, or a key that is not a regular expression.
        """
        rules = []
        for key, target in mapping.items():
            if not isinstance(key, str) or not isinstance(target, str) or not target.strip():
                raise SegkitError(source, f"label map entries are 'label: class' strings, got {key!r}: {target!r}")
            try:
                pattern = re.compile(key)
            except re.error as error:
                raise SegkitError(source, f"label map key {key!r} is not a regular expression ({error})") from None
            rules.append((key, pattern, target.strip()))
        return cls(tuple(rules), source)


def read_label_map(path: str | Path) -> LabelMap:
    """A label map from a YAML or JSON file of ``label: class`` entries.

    Raises:
        SegkitError: an unreadable file, not a mapping, or a bad entry; naming the file.
    """
    path = Path(path)
    text = read_text(path, "label map")
    try:
        data = json.loads(text) if path.suffix.lower() == ".json" else yaml.safe_load(text)
    except (json.JSONDecodeError, yaml.YAMLError) as error:
        raise SegkitError(path, f"not a readable label map ({str(error).splitlines()[0]})") from None
    if not isinstance(data, dict) or not data:
        raise SegkitError(
            path, "a label map is a mapping of label (or regular expression) to class, e.g. 'bottle\\d+: bottle'"
        )
    return LabelMap.from_mapping(data, path)


def instance_groups(labels: Iterable[str]) -> dict[str, list[str]]:
    """Labels that look like one kind of object numbered per instance, by their shared stem.

    A group has at least two labels, or one numbered label beside its plain stem
    (``can`` and ``can9``). ``lane1`` alone is left as it is.
    """
    groups: dict[str, set[str]] = {}
    unique = set(labels)
    for label in unique:
        match = _NUMBERED.fullmatch(label)
        if match is not None:
            groups.setdefault(match.group("stem").strip(), set()).add(label)
    for stem, members in groups.items():
        if stem in unique:
            members.add(stem)
    return {stem: sorted(members) for stem, members in sorted(groups.items()) if len(members) >= 2}


def suggest_label_map(labels: Iterable[str]) -> dict[str, str]:
    """The ``{regular expression: class}`` map merging each group of :func:`instance_groups` into its stem."""
    return {re.escape(stem).replace("\\ ", " ") + r"[\s_-]*\d*": stem for stem in instance_groups(labels)}


def describe_groups(counts: Counter[str], limit: int = 3) -> str:
    """``"bottle1 … bottle54 (54 labels), battery_1 … (3)"``: the instance-numbered groups in a few words."""
    parts = []
    for stem, members in instance_groups(counts).items():
        shown = " … ".join([members[0], members[-1]]) if len(members) > 1 else members[0]
        parts.append(f"{stem}: {shown} ({len(members)} labels)")
    more = f" and {len(parts) - limit} more" if len(parts) > limit else ""
    return "; ".join(parts[:limit]) + more


def check_known_labels(
    counts: Counter[str], known: Iterable[str], origin: str, first_files: dict[str, Path], where: Path
) -> None:
    """Refuse labels outside ``known``: one line naming every one with its count, and ``--label-map``.

    The error names the first annotation holding an unknown label (``first_files``: label ->
    file), else ``where``.

    Raises:
        SegkitError: some labels are not classes.
    """
    known = set(known)
    unknown = {label: count for label, count in counts.items() if label not in known}
    if not unknown:
        return
    listing = ", ".join(f"'{label}' ({count})" for label, count in sorted(unknown.items()))
    first = min((first_files[label] for label in unknown if label in first_files), default=where)
    count = f"{len(unknown)} label{'s are' if len(unknown) > 1 else ' is'}"
    raise SegkitError(
        first,
        f"unknown label{'s' if len(unknown) > 1 else ''}: {count} not in the class list ({origin}): {listing}; "
        "map labels to classes with --label-map FILE (YAML of 'label: class', regular expressions allowed, "
        "e.g. 'bottle[_ ]?\\d+: bottle')",
    )


def suggestion_yaml(mapping: dict[str, str]) -> str:
    """The suggested map as YAML, ready for ``--label-map``."""
    header = "# segkit's suggestion: instance-numbered labels merged into one class each; edit, then --label-map\n"
    return header + yaml.safe_dump(mapping, sort_keys=False, allow_unicode=True)
