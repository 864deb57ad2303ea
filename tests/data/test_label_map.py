"""Label maps for labelme: instance-numbered labels found and a map suggested, --label-map applied by convert,
inspect and train, every unknown label listed at once, images found one folder down."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from data.test_labelme import make_image, shape, write_labelme
from segkit.cli import main
from segkit.data.label_map import LabelMap, instance_groups, read_label_map, suggest_label_map
from segkit.data.sources import open_source
from segkit.errors import SegkitError

LITTER = ["bottle1", "bottle2", "bottle54", "can", "can9", "paper box_2", "paper box_3", "battery_1", "dog"]


def box(label: str, left: int) -> dict:
    return shape(label, [[left, 2], [left + 6, 12]], "rectangle")


def litter_folder(root: Path, images_below: bool = False) -> Path:
    """labelme files labelling kinds of litter per object (bottle1, can9 ...), 3 shapes each."""
    for index in range(3):
        labels = LITTER[3 * index : 3 * index + 3]
        path = write_labelme(root, f"photo{index}", [box(label, 2 + 10 * k) for k, label in enumerate(labels)])
        if images_below:  # a common export layout: the photos in images/ below the JSON files
            (root / "images").mkdir(exist_ok=True)
            (root / f"photo{index}.png").rename(root / "images" / f"photo{index}.png")
            assert path.exists()
    return root


def test_instance_numbered_labels_are_grouped_and_a_map_suggested() -> None:
    assert instance_groups(LITTER) == {
        "bottle": ["bottle1", "bottle2", "bottle54"],
        "can": ["can", "can9"],
        "paper box": ["paper box_2", "paper box_3"],
    }
    suggestion = LabelMap.from_mapping(suggest_label_map(LITTER))
    assert [suggestion(label) for label in LITTER] == [
        "bottle", "bottle", "bottle", "can", "can", "paper box", "paper box", "battery_1", "dog",
    ]  # fmt: skip
    assert instance_groups(["lane1", "car"]) == {}  # one numbered label alone is a class of its own


def test_label_map_files_exact_names_first_then_expressions(tmp_path: Path) -> None:
    path = tmp_path / "map.yaml"
    path.write_text("'battery[_ ]?\\d+': battery\nbottle\\d+: bottle\nbottle1: special\n", encoding="utf-8")
    rules = read_label_map(path)
    assert [rules(label) for label in ("battery_1", "bottle7", "bottle1", "dog")] == [
        "battery", "bottle", "special", "dog",
    ]  # fmt: skip
    (tmp_path / "bad.json").write_text(json.dumps({"(": "x"}))
    with pytest.raises(SegkitError, match="bad.json: label map key '\\(' is not a regular expression"):
        read_label_map(tmp_path / "bad.json")
    (tmp_path / "list.yaml").write_text("- a\n- b\n")
    with pytest.raises(SegkitError, match="a label map is a mapping"):
        read_label_map(tmp_path / "list.yaml")


def test_inspect_says_where_labelme_images_were_found(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    src = litter_folder(tmp_path / "litter", images_below=True)
    assert main(["inspect", str(src), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["labelme_images"] == {"in images/ below the JSON": 3}
    assert main(["inspect", str(src)]) == 0
    assert "labelme   images in images/ below the JSON: 3" in capsys.readouterr().out


def test_convert_suggests_then_applies_a_label_map(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, capsys: pytest.CaptureFixture[str]
) -> None:
    src = litter_folder(tmp_path / "litter", images_below=True)  # and the photos one folder down
    out = tmp_path / "out"
    with caplog.at_level("WARNING"):
        assert main(["convert", "labelme", str(src), str(out), "--noviz"]) == 0
    suggested = out / "label_map.suggested.yaml"
    assert "labels look numbered per object (bottle: bottle1 … bottle54 (3 labels)" in caplog.text
    assert str(suggested) in caplog.text
    assert len((out / "class_names.txt").read_text().splitlines()) == 10  # _background_ and every label as it was
    mapped = tmp_path / "mapped"
    assert main(["convert", "labelme", str(src), str(mapped), "--noviz", "--label-map", str(suggested)]) == 0
    names = (mapped / "class_names.txt").read_text().splitlines()
    assert names == ["_background_", "battery_1", "bottle", "can", "dog", "paper box"]
    assert not (mapped / "label_map.suggested.yaml").exists()


def test_every_unknown_label_is_listed_with_its_count(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    src = litter_folder(tmp_path / "litter")
    out = tmp_path / "out"
    assert main(["convert", "labelme", str(src), str(out), "--classes", "bottle,can,dog"]) == 2
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and not out.exists()
    assert "photo0.json: unknown labels: 7 labels are not in the class list (--classes + _background_): " in error
    assert (
        "'battery_1' (1), 'bottle1' (1)" in error
        and "'paper box_3' (1); map labels to classes with --label-map" in error
    )
    with pytest.raises(SegkitError, match="7 labels are not in the class list"):
        open_source(src, classes="bottle,can,dog")


def test_inspect_and_train_read_through_the_map(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    src = litter_folder(tmp_path / "litter")
    assert main(["inspect", str(src), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["label_map_suggestion"] == suggest_label_map(LITTER)
    assert main(["inspect", str(src)]) == 0
    assert "this --label-map (YAML) would make one class of each kind" in capsys.readouterr().out
    label_map = tmp_path / "map.yaml"
    label_map.write_text("'bottle\\d+': bottle\n'can\\d*': can\n'paper box_\\d+': paper\nbattery_1: battery\n")
    source = open_source(src, label_map=label_map)
    assert source.classes == ["_background_", "battery", "bottle", "can", "dog", "paper"]
    mask = source.load(0).mask
    assert set(np.unique(mask)) == {0, 2}  # bottle1, bottle2, bottle54: one class
    assert main(["inspect", str(src), "--label-map", str(label_map), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["label_map_suggestion"] == {}
    counts = Counter(label for label in LITTER)
    assert sum(counts.values()) == 9 and make_image().shape[2] == 3


def test_convert_reads_the_labels_txt_predict_wrote(tmp_path: Path) -> None:
    src = tmp_path / "prelabels"
    write_labelme(src, "a", [box("road", 2)])
    (src / "labels.txt").write_text("__ignore__\n_background_\ncar\nroad\n")
    out = tmp_path / "out"
    assert main(["convert", "labelme", str(src), str(out), "--noviz"]) == 0
    assert (out / "class_names.txt").read_text().splitlines() == ["_background_", "car", "road"]
