"""The planner: fingerprint, rules with reasons, user options kept, measured precision, pretrained by default."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image

from segkit.cli import main
from segkit.config import TrainConfig
from segkit.data.dataset import DecodedSource
from segkit.data.sources import open_source
from segkit.models import weights
from segkit.planning import planner as planner_module
from segkit.planning.fingerprint import compute_fingerprint
from segkit.planning.planner import make_plan
from segkit.planning.probe import Measurement
from segkit.training.builders import open_training_data
from segkit.training.race import plan_candidates


def write_dataset(root: Path, count: int, size: tuple[int, int], draw: Any) -> Path:
    """``count`` images of ``size`` (h, w) with masks drawn by ``draw(mask, index)``."""
    for folder in ("images", "masks"):
        (root / folder).mkdir(parents=True)
    rng = np.random.default_rng(0)
    for index in range(count):
        mask = np.zeros(size, np.uint8)
        draw(mask, index)
        image = rng.integers(0, 255, (*size, 3), dtype=np.uint8)
        Image.fromarray(image).save(root / "images" / f"{index:02d}.png")
        Image.fromarray(mask).save(root / "masks" / f"{index:02d}.png")
    (root / "class_names.txt").write_text("background\nline\nblock\n")
    return root


def one_line(mask: np.ndarray, index: int) -> None:
    mask[10:12, 5:-5] = 1  # a line 2 px thick


def lines_and_blocks(mask: np.ndarray, index: int) -> None:
    mask[10:12, 5:-5] = 1  # a line 2 px thick
    mask[40:80, 40:80] = 2  # a 40 px block


@pytest.fixture
def no_weights(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_CACHE", str(tmp_path / "hf"))
    monkeypatch.delenv("SEGKIT_WEIGHTS", raising=False)
    monkeypatch.setattr(weights, "network_reachable", lambda host, timeout=1.5: False)


@pytest.fixture
def fast_probe(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Measurements without training: bf16 twice as fast as float32, 1 megapixel/s in float32."""
    seen: list[str] = []

    def measure(spec, size, batch_size, precision, device, steps=2):
        seen.append(precision)
        width = spec.kwargs.get("base_channels", 16)
        rate = 1e6 / (size[0] * size[1]) * (2.0 if precision == "bf16" else 1.0) * (16 / width) ** 1.5
        return Measurement(tuple(size), batch_size, precision, rate)

    monkeypatch.setattr(planner_module, "measure_training", measure)
    monkeypatch.setattr(planner_module, "bf16_supported", lambda device: True)
    return seen


def plan_for(data: Path, **options: Any):
    config = TrainConfig.from_options({"data": str(data), "device": "cpu", **options})
    return make_plan(config, open_training_data(config), torch.device("cpu"))


def test_fingerprint_measures_shares_and_widths(tmp_path: Path) -> None:
    data = write_dataset(tmp_path / "data", 3, (120, 100), lines_and_blocks)
    source = open_source(data)
    fingerprint = compute_fingerprint(DecodedSource(source), [0, 1, 2], source.classes)
    assert fingerprint.median_size == (120, 100) and fingerprint.same_size and fingerprint.num_images == 3
    pixels = 120 * 100
    assert fingerprint.pixel_share[1] == pytest.approx(2 * 90 / pixels) and fingerprint.image_share == [1, 1, 1]
    assert fingerprint.width[1] == pytest.approx(2, abs=0.6)  # the 2 px line
    assert 15 <= fingerprint.width[2] <= 45  # the 40 px block (a square counts about half its side)
    assert fingerprint.object_area_p10[2] == pytest.approx(1600)


def test_small_images_are_trained_whole_at_native_resolution(tmp_path: Path, no_weights, fast_probe) -> None:
    plan = plan_for(write_dataset(tmp_path / "data", 4, (120, 100), lines_and_blocks), time_budget="60s")
    choices = {choice.option: choice for choice in plan.choices}
    assert choices["model"].value == "unet" and "no ImageNet weights" in choices["model"].reason
    assert choices["preprocess.resize"].value == "letterbox"
    assert choices["preprocess.img_size"].value == (128, 128)  # 120 x 100 rounded up to multiples of 32
    assert choices["precision"].value == "bf16" and "2.0x faster" in choices["precision"].reason
    assert fast_probe == ["32", "bf16"]  # float32 and bf16; three classes: the narrower U-Net does not race
    assert plan.epochs is None  # measured on the real training path later (the race, or segkit plan's slice)
    assert all(choice.reason for choice in plan.choices)  # one reason per choice
    text = plan.format()
    assert "letterbox" in text and "line" in text and "(thin 2px)" in text
    # the race: the leader and its lower learning rate; the ladder's smaller whole images would thin the 2 px line
    # the leader keeps, so they do not race; the narrower U-Net races only against one class
    labels = [candidate.label for candidate in plan.candidates]
    assert labels == ["unet-16, whole images 128x128", "unet-16, whole images 128x128, lr 0.001"]
    assert plan.candidates[0].choices == {}
    assert "whole images 96x96" in plan.left_out and "whole images 64x64" in plan.left_out
    assert not any("model_kwargs" in candidate.choices for candidate in plan.candidates)
    assert "race candidates" in text
    binary = write_dataset(tmp_path / "binary", 4, (120, 100), one_line)
    (binary / "class_names.txt").write_text("background\nline\n")
    binary_plan = plan_for(binary, time_budget="60s")
    # one class on a CPU: width 8 leads (twice the steps), width 16 races second (one axis, the network)
    assert {c.option: c.value for c in binary_plan.choices}["model_kwargs"] == {"base_channels": 8}
    assert binary_plan.candidates[1].choices == {"model_kwargs": {"base_channels": 16}}


def test_a_cpu_batch_leaves_an_epoch_eight_steps_on_few_images(tmp_path: Path, no_weights, fast_probe) -> None:
    few = plan_for(write_dataset(tmp_path / "few", 30, (120, 100), lines_and_blocks), time_budget="60s")
    choices = {choice.option: choice for choice in few.choices}
    # 128² images would take 16 per batch (the pixel rule); over 24 training images that is 2 steps an epoch
    assert few.fingerprint.num_images == 24 and choices["batch_size"].value == 3
    assert "8 steps per epoch over 24 images" in choices["batch_size"].reason
    # where the pixel rule gives a smaller batch (2 at 512²), the image count does not bind
    large = plan_for(write_dataset(tmp_path / "large", 30, (600, 700), lines_and_blocks), img_size=512)
    large_batch = {c.option: c for c in large.choices}["batch_size"]
    assert large_batch.value == 2 and "2 x 512x512" in large_batch.reason
    tiny = plan_for(write_dataset(tmp_path / "tiny", 10, (120, 100), lines_and_blocks), time_budget="60s")
    tiny_batch = {c.option: c for c in tiny.choices}["batch_size"]
    assert tiny_batch.value == 2 and "the smallest batch: 8 images give fewer than 8 steps" in tiny_batch.reason


def test_large_images_with_thin_objects_get_native_crops(tmp_path: Path, no_weights, fast_probe) -> None:
    def thin(mask: np.ndarray, index: int) -> None:
        mask[100:102, :] = 1
        mask[300:700, 300:700] = 2

    plan = plan_for(write_dataset(tmp_path / "data", 2, (900, 1300), thin), time_budget="10s")
    choices = {choice.option: choice.value for choice in plan.choices}
    # whole images would shrink the 2 px line below 1.5 px; native crops keep it and train enough epochs
    assert choices["preprocess.resize"] == "crop" and choices["preprocess.scale"] == 1.0
    assert choices["preprocess.img_size"] == (256, 256)
    # the inputs that would thin the line do not race against a leader that keeps it
    labels = [candidate.label for candidate in plan.candidates]
    assert not any("whole images" in label or "0.5x scale" in label for label in labels)
    assert "whole images 512x384" in plan.left_out and "256px crops at 0.5x scale" in plan.left_out
    assert "line under 1.5px" in plan.left_out and "not raced" in plan.format()
    assert plan.to_dict()["left_out"] == plan.left_out


def test_thin_objects_and_a_short_budget_race_native_crops_first(tmp_path: Path, no_weights, fast_probe) -> None:
    def line_only(mask: np.ndarray, index: int) -> None:
        mask[100:102, :] = 1

    def thin(mask: np.ndarray, index: int) -> None:
        line_only(mask, index)
        mask[300:700, 300:700] = 2

    data = write_dataset(tmp_path / "data", 5, (500, 400), thin)
    roomy_plan = plan_for(data, time_budget="10m")
    roomy = {c.option: c for c in roomy_plan.choices}
    assert not roomy_plan.no_race
    assert roomy["preprocess.img_size"].value == (512, 416)  # enough epochs at native size: the line kept 2 px
    assert roomy["model_kwargs"].value == {"base_channels": 16}
    tight = plan_for(data, time_budget="3s")
    assert not tight.no_race  # ~21 epochs at the ladder's smallest rung, ~39 further down: a fifth of them may race
    # ~7 epochs at the ladder's smallest rung (256 x 224), which thins the line to 1 px already: the line does not
    # hold the block back, and whole images further down give the most epochs (enough of them to race)
    shorter = plan_for(data, time_budget="1s")
    shortest = {c.option: c for c in shorter.choices}["preprocess.img_size"]
    assert shortest.value == (128, 128) and "line 0.4px wide there" in shortest.reason and not shorter.no_race
    # background and the line alone: no whole images below the ladder (the line is all there is to lose), and
    # ~7 epochs are too few to give a fifth of them to a race
    lone = write_dataset(tmp_path / "lone", 5, (500, 400), line_only)
    (lone / "class_names.txt").write_text("background\nline\n")
    lone_plan = plan_for(lone, time_budget="1s", model_kwargs="base_channels=16")
    assert {c.option: c.value for c in lone_plan.choices}["preprocess.img_size"] == (256, 224)
    assert "too few" in lone_plan.no_race and "race           none" in lone_plan.format()
    config = TrainConfig.from_options({"data": str(lone), "device": "cpu", "time_budget": 1})
    assert plan_candidates(lone_plan, config)[1] == lone_plan.no_race  # the race stage trains the leader alone
    choices = {c.option: c for c in tight.choices}
    # under the rules' 25 epochs on the whole ladder (~21 at 256 x 224): whole images further down, and the leader
    # is the one with the most pixels that gives 25 (the line, 1 px wide at 256 x 224, holds nothing back)
    size = choices["preprocess.img_size"]
    assert size.value == (192, 160) and "epochs (first guess); line 0.6px wide there" in size.reason
    labels = [candidate.label for candidate in tight.candidates]
    # each challenger changes one axis: the leader shrinks the images, so native crops second, the leader at a
    # lower learning rate third (three classes: the narrower U-Net does not race), then the other inputs
    assert labels[1:4] == [
        "unet-16, 256px crops at native scale",
        "unet-16, whole images 160x192, lr 0.001",
        "unet-16, whole images 224x256",
    ]
    assert not any("model_kwargs" in candidate.choices for candidate in tight.candidates)


def test_whole_images_with_thick_objects_are_shrunk_for_the_budget(tmp_path: Path, no_weights, fast_probe) -> None:
    def thick(mask: np.ndarray, index: int) -> None:
        mask[50:250, :] = 1
        mask[300:480, 100:400] = 2

    data = write_dataset(tmp_path / "data", 5, (500, 480), thick)
    roomy_plan = plan_for(data, time_budget="10m")
    roomy = {c.option: c.value for c in roomy_plan.choices}
    assert roomy["preprocess.img_size"] == (512, 480) and roomy["model_kwargs"] == {"base_channels": 16}
    labels = [candidate.label for candidate in roomy_plan.candidates]  # nothing thin: smaller inputs race too
    assert "unet-16, whole images 352x352" in labels and not roomy_plan.left_out
    tight = {c.option: c for c in plan_for(data, time_budget="3s").choices}
    height, width = tight["preprocess.img_size"].value
    assert height < 512 and width < 480 and tight["preprocess.resize"].value == "letterbox"
    # ~5 epochs at the ladder's smallest rung (256²): whole images further down, the blocks stay wide enough there
    too_short = plan_for(data, time_budget="1s")
    chosen = {c.option: c for c in too_short.choices}["preprocess.img_size"]
    assert chosen.value == (128, 128) and "short budget" in chosen.reason


def test_rare_classes_among_several_are_weighted_up_in_a_short_run(tmp_path: Path, no_weights, fast_probe) -> None:
    def dot(mask: np.ndarray, index: int) -> None:
        mask[10:14, 10:14] = 1  # 16 of 200000 pixels

    def rare_dot(mask: np.ndarray, index: int) -> None:
        dot(mask, index)
        mask[100:400, 100:300] = 2

    several = write_dataset(tmp_path / "several", 20, (500, 400), rare_dot)
    short = plan_for(several, time_budget="1s")  # ~5 epochs (first guess) even at 128²
    choice = {c.option: c for c in short.choices}["class_weights"]
    assert choice.value == "auto" and "line under 1 %" in choice.reason and "too few" in choice.reason
    assert short.apply(TrainConfig.from_options({"data": str(several)})).class_weights == "auto"
    assert {c["option"]: c["value"] for c in short.to_dict()["choices"]}["class_weights"] == "auto"  # plan.json
    roomy_plan = plan_for(several, time_budget="10m")
    roomy = {c.option: c for c in roomy_plan.choices}["class_weights"]
    assert roomy.value is None and "enough epochs" in roomy.reason
    # decided again on the epochs measured on the real path: fewer than the first guess, so weighted after all
    assert roomy_plan.revise_class_weights(40) is None  # the same decision: nothing changes
    revised = roomy_plan.revise_class_weights(12)
    assert revised is roomy and roomy.value == "auto" and "~12 epochs (measured)" in roomy.reason
    assert roomy_plan.apply(TrainConfig.from_options({"data": str(several)})).class_weights == "auto"
    assert short.revise_class_weights(30) is not None and choice.value is None and "measured" in choice.reason
    binary = write_dataset(tmp_path / "binary", 5, (500, 400), dot)
    (binary / "class_names.txt").write_text("background\nline\n")
    binary_choice = {c.option: c for c in plan_for(binary, time_budget="1s").choices}["class_weights"]
    assert binary_choice.value is None and "over-predict" in binary_choice.reason
    common = plan_for(write_dataset(tmp_path / "common", 4, (120, 100), lines_and_blocks), time_budget="1s")
    assert {c.option: c.value for c in common.choices}["class_weights"] is None  # the line is 1.5 % of the pixels
    pinned_plan = plan_for(several, time_budget="1s", class_weights="1,1,1")
    pinned = {c.option: c for c in pinned_plan.choices}
    assert pinned["class_weights"].user and pinned["class_weights"].value == [1.0, 1.0, 1.0]
    assert pinned_plan.revise_class_weights(40) is None and pinned["class_weights"].value == [1.0, 1.0, 1.0]
    off = {c.option: c for c in plan_for(several, time_budget="1s", class_weights="none").choices}
    assert off["class_weights"].user and off["class_weights"].value is None


def test_options_the_user_set_are_kept(tmp_path: Path, no_weights, fast_probe) -> None:
    data = write_dataset(tmp_path / "data", 4, (120, 100), lines_and_blocks)
    plan = plan_for(data, time_budget="60s", img_size=64, precision="32", batch_size=3)
    choices = {choice.option: choice for choice in plan.choices}
    for option, value in (("preprocess.img_size", (64, 64)), ("precision", "32"), ("batch_size", 3)):
        assert choices[option].user and choices[option].value == value
    config = plan.apply(
        TrainConfig.from_options({"data": str(data), "img_size": 64, "precision": "32", "batch_size": 3})
    )
    assert config.preprocess.img_size == (64, 64) and config.precision == "32" and config.model == "unet"


def test_pretrained_encoder_is_preferred_when_its_weights_are_here(
    tmp_path: Path, no_weights, fast_probe, monkeypatch: pytest.MonkeyPatch
) -> None:
    file = tmp_path / "torch" / "hub" / "checkpoints" / "mobilenet_v2-b0353104.pth"
    file.parent.mkdir(parents=True)
    file.write_bytes(b"x")
    plan = plan_for(write_dataset(tmp_path / "data", 4, (120, 100), lines_and_blocks), time_budget="60s")
    choices = {choice.option: choice for choice in plan.choices}
    assert choices["model"].value == "mobilenetv2-unet" and str(file) in choices["model"].reason
    assert choices["pretrained"].value is True
    scratch = [c for c in plan.candidates if c.choices.get("pretrained") is False]
    assert scratch and scratch[0].choices["model"] == "unet" and scratch[0].choices["lr"] == 3e-3
    refused = plan_for(tmp_path / "data", time_budget="60s", pretrained=False)
    assert {c.option: c.value for c in refused.choices}["model"] == "unet"
    # a budget that gives a few epochs at the ladder's smallest rung: from scratch the plan goes further down,
    # with the pretrained encoder it stays on the ladder (it learns in a few epochs and loses by shrunken images)
    large = write_dataset(tmp_path / "large", 5, (500, 480), lines_and_blocks)
    scratch_size = {c.option: c.value for c in plan_for(large, time_budget="1s", pretrained=False).choices}
    short_plan = plan_for(large, time_budget="1s")
    pretrained = {c.option: c for c in short_plan.choices}
    assert scratch_size["preprocess.img_size"] == (128, 128)
    assert pretrained["pretrained"].value is True and pretrained["preprocess.img_size"].value == (256, 256)
    assert "short budget" in pretrained["preprocess.img_size"].reason
    # too few epochs to race: the U-Net from scratch is neither a candidate nor timed (its probe costs the budget)
    assert short_plan.no_race and not any(c.choices.get("pretrained") is False for c in short_plan.candidates)
    assert len(short_plan.measurements) == len(plan_for(large, time_budget="1s", model="mobilenetv2-unet").measurements)


def test_plan_command_prints_reasons_and_json_without_training(
    tmp_path: Path, no_weights, fast_probe, capsys: pytest.CaptureFixture[str]
) -> None:
    data = write_dataset(tmp_path / "data", 4, (120, 100), lines_and_blocks)
    assert main(["plan", str(data), "--time-budget", "1m", "--device", "cpu"]) == 0
    text = capsys.readouterr().out
    assert "img_size" in text and "bf16" in text and "expected in the time budget" in text
    assert main(["plan", str(data), "--device", "cpu", "--json"]) == 0
    document = json.loads(capsys.readouterr().out)
    assert {"choices", "fingerprint", "measurements"} <= set(document)
    assert main(["train", str(data), "--plan-only", "--device", "cpu", "--out", str(tmp_path / "run")]) == 0
    assert not (tmp_path / "run").exists()
