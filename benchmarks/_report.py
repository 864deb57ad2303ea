"""Shared benchmark reporting: what machine ran it, and result rows appended to benchmarks/README.md."""

from __future__ import annotations

import os
import platform
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

README = Path(__file__).resolve().with_name("README.md")
README_TITLE = "# Benchmarks\n\nResults appended by the scripts in this folder, one row per run (newest last).\n"


def cpu_model() -> str:
    """The CPU model name from /proc/cpuinfo (Linux), else what :mod:`platform` knows."""
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        for line in cpuinfo.read_text(errors="replace").splitlines():
            key, _, value = line.partition(":")
            if key.strip() in ("model name", "Model", "Hardware"):
                return value.strip()
    return platform.processor() or platform.machine()


def machine_info() -> dict[str, Any]:
    """CPU, usable cores, GPU, library versions and the UTC date of this run."""
    import torch

    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return {
        "cpu": cpu_model(),
        "cores": usable,
        "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "torch": torch.__version__,
        "python": platform.python_version(),
        "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
    }


def _table_line(cells: Sequence[Any]) -> str:
    return "| " + " | ".join(str(cell).replace("|", "/") for cell in cells) + " |"


def append_result(section: str, row: Mapping[str, Any], readme: Path = README) -> None:
    """Append ``row`` to the markdown table under ``## section`` of ``readme``, creating what is missing.

    The table's columns are the row's keys; a new section (with its header row) is
    added at the end of the file when ``## section`` does not exist yet.
    """
    from segkit.files import atomic_write

    text = readme.read_text() if readme.is_file() else README_TITLE
    lines = text.rstrip("\n").splitlines()
    heading = f"## {section}"
    new_row = _table_line(row.values())
    if heading not in lines:
        header = [_table_line(row.keys()), _table_line(["---"] * len(row))]
        lines += ["", heading, "", *header, new_row]
    else:
        start = lines.index(heading) + 1
        end = next((i for i in range(start, len(lines)) if lines[i].startswith("## ")), len(lines))
        table = [i for i in range(start, end) if lines[i].startswith("|")]
        if table:
            lines.insert(table[-1] + 1, new_row)
        else:
            lines[end:end] = ["", _table_line(row.keys()), _table_line(["---"] * len(row)), new_row]
    atomic_write(readme, lambda temp: temp.write_text("\n".join(lines) + "\n"))


@dataclass(frozen=True)
class Target:
    """One benchmark figure checked against its target.

    Attributes:
        name: what is measured, e.g. ``"segkit / bare loop (images/s)"``.
        value: the measured figure; ``None`` when it could not be measured.
        target: the threshold; ``None`` for a figure reported without a target.
        at_least: PASS when ``value >= target`` (else when ``value <= target``).
        unit: shown after the numbers (``"x"`` for ratios, ``"%"`` for shares in percent).
        note: anything the number alone does not say (e.g. ``"upper bound"``).
    """

    name: str
    value: float | None
    target: float | None = None
    at_least: bool = True
    unit: str = "x"
    note: str = ""

    @property
    def verdict(self) -> str:
        """``PASS``, ``MISS``, or ``-`` (no target, or nothing measured)."""
        if self.target is None or self.value is None:
            return "-"
        passed = self.value >= self.target if self.at_least else self.value <= self.target
        return "PASS" if passed else "MISS"

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "value": self.value,
            "target": self.target,
            "at_least": self.at_least,
            "unit": self.unit,
            "verdict": self.verdict,
            "note": self.note,
        }


def _number(value: float | None, unit: str) -> str:
    """Ratios ``1.23x``, shares ``99.96%``, anything else with 4 significant digits and its unit."""
    if value is None:
        return "-"
    if unit == "x":
        return f"{value:.3g}x"
    if unit == "%":
        return f"{value:.2f}%"
    return f"{value:.4g} {unit}".rstrip()


def append_targets(
    section: str, targets: Sequence[Target], settings: str, machine: Mapping[str, Any], readme: Path = README
) -> None:
    """Append one row per figure (value, target, PASS/MISS) under ``## section`` with the machine and date."""
    for item in targets:
        comparison = "-" if item.target is None else ("≥ " if item.at_least else "≤ ") + _number(item.target, item.unit)
        append_result(
            section,
            {
                "date": machine["date"],
                "figure": item.name,
                "value": _number(item.value, item.unit) + (f" ({item.note})" if item.note else ""),
                "target": comparison,
                "result": item.verdict,
                "settings": settings,
                "CPU": f"{machine['cpu']} ({machine['cores']} cores)",
                "GPU": machine["gpu"] or "-",
                "torch": machine["torch"],
            },
            readme,
        )
