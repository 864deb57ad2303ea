"""The Python API (``segkit.<command>``): each function is its command's, with the same options, outputs and errors.

One tiny dataset and one short training run are shared by the module; every function is
called for real on them and, where the command writes something, compared with what
``segkit.cli.main`` writes from the same inputs.
"""

from __future__ import annotations

import dataclasses
import importlib
import inspect as pyinspect
import io
import json
import pkgutil
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image
from training.conftest import tiny_options

import segkit
from segkit.cli import build_parser, main
from segkit.errors import OptionError, SegkitError
from segkit.prediction.options import PredictionOptions
from segkit.training.callbacks import TrainResult

COMMAND_OF = {  # API function -> its command's argv prefix
    "convert_labelme": ["convert", "labelme"],
    "inspect": ["inspect"],
    "evaluate": ["evaluate"],
    "predict": ["predict"],
    "export": ["export"],
    "serve": ["serve"],
    "show": ["show"],
    "report": ["report"],
    "suggest": ["suggest"],
    "audit": ["audit"],
}
OUTPUT_ONLY = {"inspect": {"json"}}  # how the command prints: the function returns the report instead


@pytest.fixture(scope="module")
def work(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from segkit.data.synthetic import DemoSpec, generate_demo_dataset

    root = tmp_path_factory.mktemp("api")
    generate_demo_dataset(root / "labelme", DemoSpec(num_images=8, width=48, height=40, seed=3))
    return root


@pytest.fixture(scope="module")
def data(work: Path) -> Path:
    return segkit.convert_labelme(work / "labelme", work / "data", noviz=True).out


@pytest.fixture(scope="module")
def trained(data: Path, work: Path) -> TrainResult:
    return segkit.train(**tiny_options(data, work / "run", epochs=1), progress=False)


def tree(folder: Path) -> dict[str, bytes]:
    return {
        path.relative_to(folder).as_posix(): path.read_bytes() for path in sorted(folder.rglob("*")) if path.is_file()
    }


def cli_error(argv: list[str], capsys: pytest.CaptureFixture[str]) -> str:
    """The one-line problem the command reports (its own error line, or argparse's usage error)."""
    capsys.readouterr()
    try:
        assert main(argv) == 2
    except SystemExit as exit_:
        assert exit_.code == 2
    return capsys.readouterr().err.strip().splitlines()[-1].split("error: ", 1)[1]


# ---------------------------------------------------------------- the functions mirror the commands
class Called(Exception):
    """Raised by a stand-in library function: the command reached it."""


@pytest.mark.parametrize(
    "name, where, argv",
    [
        ("convert_labelme", "segkit.data.convert:convert_labelme", ["convert", "labelme", "src", "out"]),
        ("convert_masks", "segkit.data.convert:convert_masks", ["convert", "masks", "src", "out"]),
        ("inspect", "segkit.data.inspect:inspect_dataset", ["inspect", "data"]),
        ("plan", "segkit.training.race:plan_training", ["plan", "data"]),
        ("train", "segkit.training.trainer:train", ["train", "data"]),
        ("evaluate", "segkit.evaluation.evaluate:evaluate", ["evaluate", "model.pt", "data"]),
        ("predict", "segkit.prediction.writer:predict", ["predict", "model.pt", "a.png", "--out", "o"]),
        ("export", "segkit.exporters.export:export", ["export", "model.pt", "--out", "o.onnx"]),
        ("serve", "segkit.serving.server:serve_model", ["serve", "model.pt"]),
        ("show", "segkit.data.masks:show_masks", ["show", "m.png"]),
        ("suggest", "segkit.labelling.suggest:suggest", ["suggest", "model.pt", "unlabeled/"]),
        ("report", "segkit.evaluation.run_report:report_run", ["report", "run"]),
        ("describe_models", "segkit.models.registry:describe_models", ["models"]),
        ("weights", "segkit.models.weights:weights_report", ["weights"]),
        ("run_demo", "segkit.demo:run_demo", ["demo"]),
    ],
)
def test_each_command_runs_its_function(
    name: str, where: str, argv: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """``segkit.<name>`` is the library function the command calls (``plan``: the one it calls)."""
    module_name, _, function_name = where.partition(":")
    module = importlib.import_module(module_name)
    function = getattr(module, function_name)
    assert name == "plan" or getattr(segkit, name) is function
    documented = getattr(segkit, name).__doc__
    takes_arguments = bool(pyinspect.signature(function).parameters)
    assert "Example:" in documented and ("Args:" in documented or not takes_arguments)

    def stand_in(*args: Any, **kwargs: Any) -> None:
        raise Called

    monkeypatch.setattr(module, function_name, stand_in)
    with pytest.raises(Called):
        main(argv)


def test_no_function_is_hidden_by_a_sub_package() -> None:
    """Importing ``segkit.serving`` must not replace ``segkit.serve`` (hence the package names)."""
    submodules = {module.name for module in pkgutil.iter_modules(segkit.__path__)}
    assert not submodules & set(segkit.__all__)
    extra = ["train", "plan", "load", "describe_models", "weights", "run_demo", "convert_masks", "__version__"]
    assert sorted(segkit.__all__) == sorted([*COMMAND_OF, *extra])


@pytest.mark.parametrize("name", sorted(COMMAND_OF))
def test_every_command_option_is_a_keyword_with_the_same_default(name: str) -> None:
    """Every option of the command's parser is the function's keyword (or a field of the dataclass it takes as
    ``**options``), defaulting to what the option declares: its dataclass field's default (the one ``--help``
    shows) for a generated option, argparse's for one written in ``cli/``."""
    import argparse

    from segkit.data.options import ConvertLabelmeOptions, ReadOptions, ShowOptions
    from segkit.evaluation.options import ReportOptions
    from segkit.exporters.options import ExportOptions
    from segkit.serving.options import ServeConfig

    def field_default(item: dataclasses.Field) -> Any:
        return item.default_factory() if item.default_factory is not dataclasses.MISSING else item.default

    def keyword_defaults(cls: type) -> dict[str, Any]:
        """What a function taking ``cls``'s fields as ``**options`` accepts, with the defaults; a field holding
        another options dataclass (``ExportOptions.read``) stands for that class's fields."""
        defaults: dict[str, Any] = {}
        for item in dataclasses.fields(cls):
            default = field_default(item)
            defaults.update(
                keyword_defaults(type(default)) if dataclasses.is_dataclass(default) else {item.name: default}
            )
        return defaults

    takes_as_options = {  # the dataclass whose fields the function takes as **options
        "convert_labelme": ConvertLabelmeOptions,
        "export": ExportOptions,
        "serve": ServeConfig,
        "show": ShowOptions,
        "report": ReportOptions,
        "predict": PredictionOptions,
        "evaluate": PredictionOptions,
        "suggest": PredictionOptions,
        "audit": PredictionOptions,
    }
    modules = ["config", "data.options", "data.transforms", "prediction.options", "evaluation.options"]
    modules += ["exporters.options", "serving.options", "labelling.options"]
    declarations = [  # every field declared with segkit.options.option: where the commands' options come from
        item
        for module in modules
        for cls in vars(importlib.import_module(f"segkit.{module}")).values()
        if isinstance(cls, type) and dataclasses.is_dataclass(cls)
        for item in dataclasses.fields(cls)
        if "help" in item.metadata
    ]
    parser = build_parser(COMMAND_OF[name][0])
    for word in COMMAND_OF[name]:  # down to the (sub-)command's own parser
        parser = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices[word]
    parameters = pyinspect.signature(getattr(segkit, name)).parameters.values()
    accepted = keyword_defaults(takes_as_options[name]) if any(p.kind is p.VAR_KEYWORD for p in parameters) else {}
    if name == "audit":  # and how the data is read, as the commands with data options
        accepted.update(keyword_defaults(ReadOptions))
    accepted.update({p.name: p.default for p in parameters if p.kind is p.KEYWORD_ONLY or p.default is not p.empty})
    checked = 0
    for action in parser._actions:
        if not action.option_strings or isinstance(action, argparse._HelpAction):
            continue  # positional arguments: the function's own, written in cli/
        if action.dest in OUTPUT_ONLY.get(name, set()) or action.required:
            continue  # how the command prints; a required --out is the function's positional argument
        flag = action.option_strings[0]
        assert action.dest in accepted, f"segkit.{name} does not take {flag}"
        if action.default is argparse.SUPPRESS:  # generated: the declaring field's default applies
            found = [
                item
                for item in declarations
                if flag == (item.metadata["flag"] or "--" + item.name.replace("_", "-"))
                and (action.help or "").startswith(item.metadata["help"].replace("%", "%%"))
            ]
            assert found, f"{flag} of segkit {' '.join(COMMAND_OF[name])} is declared in no options dataclass"
            declared = field_default(found[0])
        else:
            declared = action.default
        default = accepted[action.dest]
        assert default == declared or isinstance(default, tuple) and list(default) == declared, (
            f"segkit {' '.join(COMMAND_OF[name])} {flag} defaults to {declared!r}, segkit.{name}'s {action.dest} "
            f"to {default!r}"
        )
        checked += 1
    assert checked >= 3  # every command has options of its own


@pytest.mark.parametrize(
    "call, argv, problem",
    [
        (
            lambda: segkit.predict("m.pt", "x.png", alpha=1.5),
            ["predict", "m.pt", "x.png", "--out", "o", "--alpha", "1.5"],
            "--alpha must be between 0 and 1, not 1.5",
        ),
        (
            lambda: segkit.predict("m.pt", "x.png", image_data=True),
            ["predict", "m.pt", "x.png", "--out", "o", "--image-data"],
            "--image-data, --polygon-tolerance and --min-area apply with --format labelme",
        ),
        (
            lambda: segkit.predict("m.pt", "x.png", tile="big"),
            ["predict", "m.pt", "x.png", "--out", "o", "--tile", "big"],
            "--tile: expected auto, 0, N or HxW, got 'big'",
        ),
        (lambda: segkit.evaluate("m.pt"), ["evaluate", "m.pt"], "give either CHECKPOINT DATA or --pred DIR --true DIR"),
        (
            lambda: segkit.evaluate(pred="p", true="t", tta="flip", masks="m"),
            ["evaluate", "--pred", "p", "--true", "t", "--tta", "flip", "--masks", "m"],
            "--masks, --tta only apply with CHECKPOINT DATA",
        ),
        (
            lambda: segkit.export("m.pt", "o.onnx", quantize="int8"),
            ["export", "m.pt", "--out", "o.onnx", "--quantize", "int8"],
            "--quantize and --calibration DATA go together",
        ),
        (
            lambda: segkit.export("m.pt", "o.onnx", max_drop=0.05, calibration_images=8),
            ["export", "m.pt", "--out", "o.onnx", "--max-drop", "0.05", "--calibration-images", "8"],
            "--calibration-images, --max-drop only apply with --quantize",
        ),
        (
            lambda: segkit.export("m.pt", "o", format="hf", opset=17),
            ["export", "m.pt", "--out", "o", "--format", "hf", "--opset", "17"],
            "--opset only apply to --format onnx (a Hugging-Face folder holds weights)",
        ),
        (
            lambda: segkit.predict("m.pt", "x.png", out="o", alpha=0.8),
            ["predict", "m.pt", "x.png", "--out", "o", "--alpha", "0.8"],
            "--alpha sets the opacity of --overlay images: add --overlay",
        ),
        (
            lambda: segkit.export("m.pt", "o", push_to_hub="me/model"),
            ["export", "m.pt", "--out", "o", "--push-to-hub", "me/model"],
            "--push-to-hub needs --format hf",
        ),
        (
            lambda: segkit.inspect("d", sheet_count=0),
            ["inspect", "d", "--sheet-count", "0"],
            "--sheet-count must be at least 1, not 0",
        ),
    ],
)
def test_option_errors_are_the_commands(
    call: Any, argv: list[str], problem: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(OptionError) as error:
        call()
    assert str(error.value) == problem
    assert cli_error(argv, capsys) == problem


# ---------------------------------------------------------------- one test per function
def test_convert_labelme(work: Path, data: Path, capsys: pytest.CaptureFixture[str]) -> None:
    result = segkit.convert_labelme(work / "labelme", work / "given", classes="square,disk,triangle", noviz=True)
    assert result.class_names == ["_background_", "square", "disk", "triangle"] and result.num_images == 8
    assert result.format().startswith("using 4 labels (--classes + _background_): _background_, square, disk")
    # labelme's labels.txt beside the annotations gives the class order (as training on them directly does)
    assert (data / "class_names.txt").read_text().split() == ["_background_", "disk", "triangle", "square"]
    capsys.readouterr()
    assert main(["convert", "labelme", str(work / "labelme"), str(work / "cli"), "--noviz"]) == 0
    assert tree(work / "cli") == tree(data)  # the command writes the same dataset
    assert capsys.readouterr().out.startswith(
        "using 4 labels (labels.txt): _background_, disk, triangle, square\nconverted 8 images"
    )
    with pytest.raises(SegkitError, match="not empty"):
        segkit.convert_labelme(work / "labelme", data)
    with pytest.raises(SegkitError, match="unknown label|not in the class list|'triangle'"):
        segkit.convert_labelme(work / "labelme", work / "partial", classes=["square", "disk"])


def test_inspect(data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    report = segkit.inspect(data, sheet=tmp_path / "sheet.png", sheet_count=4)
    assert report["num_pairs"] == 8 and report["classes"][0] == "_background_" and not report["problems"]
    assert Image.open(report["sheet"]).size[0] > 2 * 48
    assert main(["inspect", str(data), "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == {key: value for key, value in report.items() if key != "sheet"}
    with pytest.raises(SegkitError, match="split 'val' requested but the folder has no split sub-folders"):
        segkit.inspect(data, split="val")


def test_plan(data: Path, tmp_path: Path) -> None:
    plan = segkit.plan(**tiny_options(data, tmp_path / "run", epochs=1))
    chosen = {choice.option: choice for choice in plan.choices}
    assert chosen["batch_size"].value == 4 and chosen["batch_size"].user  # given: kept as it is
    assert not chosen["loss"].user and chosen["loss"].reason  # derived, with its reason
    assert "batch_size" in plan.format() and plan.to_dict()["device"] == "cpu"


def test_train(trained: TrainResult) -> None:
    assert trained.best_checkpoint.is_file() and trained.last_checkpoint.is_file()
    assert 0.0 <= trained.best_metrics["mIoU"] <= 1.0
    assert (trained.out / "history.csv").is_file() and len(trained.history) == 1


def test_evaluate(trained: TrainResult, data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    checkpoint = str(trained.best_checkpoint)
    assert segkit.evaluate(checkpoint, data, device="cpu")["num_images"] == 2  # its own folder: the held-out images
    data = Path(shutil.copytree(data, tmp_path / "copy"))  # the same images elsewhere: every one of them
    metrics = segkit.evaluate(checkpoint, data, device="cpu", json=tmp_path / "api.json", tile=24, overlap=0.5)
    assert metrics["num_images"] == 8 and list(metrics["per_class"]) == ["_background_", "disk", "triangle", "square"]
    argv = [
        "evaluate",
        checkpoint,
        str(data),
        "--device",
        "cpu",
        "--json",
        str(tmp_path / "cli.json"),
        "--tile",
        "24",
        "--overlap",
        "0.5",
    ]
    assert main(argv) == 0
    assert (tmp_path / "api.json").read_bytes() == (tmp_path / "cli.json").read_bytes()
    assert capsys.readouterr().out.count("\n") > 4  # the command prints the table of these metrics

    masks = segkit.predict(checkpoint, data / "images", device="cpu")
    segkit.predict(checkpoint, data / "images", out=tmp_path / "pred", device="cpu")
    folders = segkit.evaluate(pred=tmp_path / "pred", true=data / "masks", classes=data / "class_names.txt")
    assert folders["num_images"] == len(masks) == 8
    assert folders["mIoU"] == pytest.approx(segkit.evaluate(checkpoint, data, device="cpu")["mIoU"])


def test_predict(trained: TrainResult, data: Path, tmp_path: Path) -> None:
    checkpoint, images = str(trained.best_checkpoint), data / "images"
    masks = segkit.predict(checkpoint, images, device="cpu", tta="flip")
    assert list(masks) == sorted(images.iterdir())
    for path, mask in masks.items():
        assert mask.dtype == np.uint8 and mask.shape == Image.open(path).size[::-1]

    summary = segkit.predict(
        checkpoint, [images / "*.png", images], out=tmp_path / "api", device="cpu", tta="flip", color=True
    )  # a glob and a folder, the same images: each predicted once
    assert summary.num_images == 8 and "_background_" in summary.format()
    for path, mask in masks.items():
        np.testing.assert_array_equal(np.asarray(Image.open(tmp_path / "api" / f"{path.stem}.png")), mask)
    argv = [
        "predict",
        checkpoint,
        str(images),
        "--out",
        str(tmp_path / "cli"),
        "--device",
        "cpu",
        "--tta",
        "flip",
        "--color",
    ]
    assert main(argv) == 0
    assert tree(tmp_path / "cli") == tree(tmp_path / "api")

    segkit.predict(checkpoint, images, out=tmp_path / "labelme", format="labelme", device="cpu")
    assert (tmp_path / "labelme" / "labels.txt").read_text().split() == [
        "__ignore__",
        "_background_",
        "disk",
        "triangle",
        "square",
    ]
    with pytest.raises(OptionError, match="write files: give out"):
        segkit.predict(checkpoint, images, color=True)
    with pytest.raises(SegkitError, match="missing.png: not found"):
        segkit.predict(checkpoint, tmp_path / "missing.png")


def test_load(trained: TrainResult, data: Path) -> None:
    assert "Example:" in segkit.load.__doc__ and "Args:" in segkit.load.__doc__
    model = segkit.load(trained.best_checkpoint, device="cpu", tta="flip", tile="24x16", overlap=0.5)
    assert str(model.tta) == "flip" and model.tiling.size == (24, 16) and model.tiling.overlap == 0.5
    image = next((data / "images").iterdir())
    expected = segkit.predict(trained.best_checkpoint, image, device="cpu", tta="flip", tile="24x16", overlap=0.5)
    np.testing.assert_array_equal(model.predict(image), expected[image])
    assert model.predict_proba(np.asarray(Image.open(image))).shape == (4, 40, 48)
    with pytest.raises(OptionError, match="--overlap must be at least 0 and below 1"):
        segkit.load(trained.best_checkpoint, overlap=1)


def test_export(trained: TrainResult, data: Path, tmp_path: Path) -> None:
    onnx = segkit.export(trained.best_checkpoint, tmp_path / "model.onnx", exporter="torchscript", opset=17)
    assert onnx.path.is_file() and onnx.opset == 17 and "max |logit difference|" in onnx.format()
    folder = segkit.export(trained.best_checkpoint, tmp_path / "hf", format="hf")
    assert folder.url is None and {path.name for path in folder.path.iterdir()} == {
        "model.safetensors",
        "config.json",
        "README.md",
    }
    image = next((data / "images").iterdir())
    original = segkit.predict(trained.best_checkpoint, image, device="cpu")[image]
    np.testing.assert_array_equal(segkit.predict(folder.path, image, device="cpu")[image], original)
    through_onnx = segkit.predict(onnx.path, image, device="cpu")[image]  # ONNX Runtime, float rounding aside
    assert (through_onnx == original).mean() > 0.999
    with pytest.raises(SegkitError, match="already exists"):
        segkit.export(trained.best_checkpoint, tmp_path / "model.onnx")


def test_serve(trained: TrainResult, data: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``segkit.serve`` builds the server ``segkit serve`` builds; the runner is replaced so the test does not block."""
    from segkit.serving import server

    configs: list = []
    monkeypatch.setattr(server, "run_server", configs.append)
    monkeypatch.delenv("SEGKIT_API_KEY", raising=False)
    segkit.serve(trained.best_checkpoint, port=8123, device="cpu", api_key="secret", max_upload_mb=2, keep_alive=3)
    assert (
        main(
            [
                "serve",
                str(trained.best_checkpoint),
                "--port",
                "8123",
                "--device",
                "cpu",
                "--api-key",
                "secret",
                "--max-upload-mb",
                "2",
                "--keep-alive",
                "3",
            ]
        )
        == 0
    )
    api, cli = configs
    assert (
        (api.host, api.port, api.timeout_keep_alive)
        == (cli.host, cli.port, cli.timeout_keep_alive)
        == ("127.0.0.1", 8123, 3)
    )
    assert api.app.state.options == cli.app.state.options
    assert api.app.state.options.max_upload_bytes == 2 * 2**20

    image = io.BytesIO()
    Image.open(next((data / "images").iterdir())).save(image, "PNG")
    with TestClient(api.app, base_url="http://localhost") as client:  # a loopback host accepts loopback names
        headers = {"Authorization": "Bearer secret"}
        assert client.get("/info", headers=headers).json()["classes"][1:] == ["disk", "triangle", "square"]
        response = client.post("/predict", content=image.getvalue(), headers={**headers, "Content-Type": "image/png"})
        assert response.status_code == 200 and Image.open(io.BytesIO(response.content)).size == (48, 40)
    with pytest.raises(SegkitError, match="must be positive"):
        segkit.serve(trained.best_checkpoint, max_queue=0)


def test_train_resumes_and_reads_config_files_like_the_command(data: Path, tmp_path: Path) -> None:
    import yaml

    first = segkit.train(**tiny_options(data, tmp_path / "run", epochs=1), progress=False)
    resumed = segkit.train(resume=str(first.last_checkpoint), epochs=2, progress=False)
    assert [row["epoch"] for row in resumed.history] == [1, 2] and resumed.out == first.out
    (tmp_path / "options.yaml").write_text(yaml.safe_dump(tiny_options(data, tmp_path / "yaml", epochs=1)))
    assert segkit.train(config_file=tmp_path / "options.yaml", progress=False).out == tmp_path / "yaml"
    with pytest.raises(SegkitError, match="no training data"):
        segkit.train()
    with pytest.raises(SegkitError, match="no training data"):
        segkit.plan()
