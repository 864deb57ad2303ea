"""The planning race: sizes and slices, successive halving on real Learners, the winner trained on, records."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch

from segkit.checkpoint import load_checkpoint
from segkit.config import TrainConfig
from segkit.data.transforms import PreprocessConfig
from segkit.planning import planner as planner_module
from segkit.planning import probe
from segkit.training import race as race_module
from segkit.training.budget import (
    RunClock,
    ValidationCost,
    expected_epochs,
    image_to_time_too,
    subset_within,
    validation_pixels,
)
from segkit.training.builders import open_training_data
from segkit.training.learner import Learner
from segkit.training.race import (
    RACE_SHARE,
    Race,
    RaceCandidate,
    choose_racers,
    halving_units,
    plan_training,
    race_plan,
    race_size,
)
from segkit.training.trainer import Trainer
from segkit.training.validation import spread
from training.conftest import tiny_options


def test_successive_halving_spends_at_most_a_quarter_of_the_budget_on_losers() -> None:
    assert [halving_units(n) for n in (1, 2, 3, 4, 5)] == [(0, 0), (1, 1), (3, 2), (4, 2), (8, 4)]
    count, first, why = race_size(5, 600.0, "cpu")
    assert count == 4 and first >= race_module.MIN_SLICE["cpu"] and not why
    assert halving_units(count)[0] * first * (1 + race_module.RACE_VALIDATION_SHARE) <= RACE_SHARE * 600.0
    count, first, why = race_size(5, 300.0, "cpu")
    assert count == 3 and first >= race_module.MIN_SLICE["cpu"]
    assert race_size(5, 90.0, "cpu")[0] == 1 and "too short to race" in race_size(5, 90.0, "cpu")[2]
    assert race_size(1, 900.0, "cpu")[0] == 1 and "one candidate" in race_size(1, 900.0, "cpu")[2]


def test_every_racer_gets_enough_steps_or_fewer_race() -> None:
    def racer(label: str, steps_per_second: float) -> RaceCandidate:
        return RaceCandidate(label, None, {}, steps_per_second)

    minimum = race_module.MIN_STEPS
    four = race_module.first_slice(4, 600.0)
    quick = [
        racer("leader", 2 * minimum / four),
        racer("b", 1.0e3),
        racer("slow", 1e-3),
        racer("c", 1e3),
        racer("d", 1e3),
    ]
    chosen, first, why = choose_racers(quick, 600.0, "cpu")
    assert [c.label for c in chosen] == ["leader", "b", "c", "d"] and first == four and not why  # "slow" passed over
    # a leader too slow for four candidates' slices: three race, each longer
    chosen, first, why = choose_racers([racer("leader", 0.9 * minimum / four), *quick[1:]], 600.0, "cpu")
    assert len(chosen) == 3 and first == race_module.first_slice(3, 600.0) > four and not why
    # nobody's first slice gives the leader its steps: no race, and why
    chosen, first, why = choose_racers([racer("leader", 1e-3), *quick[1:]], 600.0, "cpu")
    assert [c.label for c in chosen] == ["leader"] and first == 0.0 and f"under {minimum} steps" in why


def test_a_budget_too_short_for_the_racers_steps_trains_the_leader_and_says_why(
    shapes_dataset: Path, tmp_path: Path, quick_race: None, caplog: pytest.LogCaptureFixture
) -> None:
    candidates = [
        candidate(shapes_dataset, tmp_path, "leader", img_size=32),
        candidate(shapes_dataset, tmp_path, "other", img_size=48),
    ]
    for racer in candidates:
        racer.steps_per_second = 1e-3  # a step every 1000 s: no slice gives anyone its steps
    with caplog.at_level(logging.INFO, logger="segkit"):
        race = cpu_race(candidates)
        winner, _, _ = race.run()
    assert winner == 0 and not race.record.raced
    assert f"race none: a first slice would give the leader under {race_module.MIN_STEPS} steps" in caplog.text


def test_the_plan_adopts_the_winner_even_when_a_candidate_before_it_was_passed_over(
    shapes_dataset: Path, tmp_path: Path, quick_race: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    from segkit.planning.planner import make_plan

    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setattr(race_module, "MIN_STEPS", 1)
    config = TrainConfig.from_options(
        {"data": str(shapes_dataset), "device": "cpu", "time_budget": 12, "model_kwargs": {"base_channels": 4}}
    )
    data = open_training_data(config)
    device = torch.device("cpu")
    plan = make_plan(config, data, device)
    assert len(plan.candidates) >= 3
    plan.candidates[1].steps_per_second = 1e-9  # far too slow: passed over
    plan.candidates = plan.candidates[:3]
    config = plan.apply(config)
    scores = iter([0.1, 0.9])  # the third candidate scores best

    monkeypatch.setattr(Race, "score", lambda self, index, learner: next(scores))
    learner, _, _ = race_plan(
        plan,
        config,
        Learner(config, data, device),
        data=data,
        device=device,
        clock=RunClock(12.0),
        build=lambda options: Learner(options, data, device),
        stop=lambda: None,
    )
    winner = plan.candidates[2]
    assert winner.choices and plan.race["entries"][plan.race["winner"]]["label"] == winner.label
    chosen = {choice.option: choice.value for choice in plan.choices}
    assert all(chosen[option] == value for option, value in winner.choices.items() if option in chosen)
    assert plan.apply(config) == learner.config  # the plan's choices are the options the run goes on with


def test_validation_subsets_are_spread_and_fit_their_time() -> None:
    indices = list(range(10, 30))
    assert spread(indices, 4) == [12, 17, 22, 27] and spread(indices, 50) == indices
    seconds = {index: 1.0 for index in indices}
    assert subset_within(indices, seconds, cap=5.0) == spread(indices, 5)  # 1 s per image, 5 s
    assert subset_within(indices, seconds, cap=100.0) == indices
    assert subset_within(indices, seconds, cap=0.1) == spread(indices, 1)  # always at least one image


def test_validation_costs_the_pixels_the_network_computes() -> None:
    """A letterboxed photo costs the same at any size; a crop model's large image costs its windows."""
    sizes = {0: (3000, 4000), 1: (120, 90), 2: (2061, 1817)}
    letterbox = PreprocessConfig(img_size=(64, 64), resize="letterbox")
    assert [network for network, _ in validation_pixels(sizes, letterbox).values()] == [64 * 64] * 3
    crops = validation_pixels(sizes, PreprocessConfig(img_size=(256, 256), resize="crop"))
    assert crops[1] == (120 * 90, 120 * 90) and crops[2] == (9 * 1024 * 1024, 2061 * 1817)  # windows overlap, pad


def test_validation_cost_separates_the_network_from_the_image() -> None:
    """Two letterboxed images of one network size but other sizes give both rates; one image gives the network's."""
    truth = ValidationCost(per_network_pixel=1e-6, per_image_pixel=1e-8)
    small, large = (65536, 120_000), (65536, 22_500_000)
    fitted = ValidationCost.fit((small, truth.seconds(small)), (large, truth.seconds(large)))
    assert fitted.per_network_pixel == pytest.approx(1e-6) and fitted.per_image_pixel == pytest.approx(1e-8)
    assert fitted.seconds(large) == pytest.approx(truth.seconds(large))
    # one timing: all of it per network pixel, or what the image rate leaves (never below a tenth)
    assert ValidationCost.measured(small, 0.5) == ValidationCost(0.5 / 65536, 0.0)
    rescaled = ValidationCost.measured(large, 1.0, per_image_pixel=1e-8)
    assert rescaled.seconds(large) == pytest.approx(1.0) and rescaled.per_image_pixel == pytest.approx(1e-8)
    assert ValidationCost.measured(large, 0.1, per_image_pixel=1e-8).per_network_pixel == pytest.approx(0.01 / 65536)
    # the race times the largest image too when its pixels mix otherwise and its network pixels are few
    letterboxed = {0: (4096, 12_000), 1: (4096, 22_500_000), 2: (4096, 50_000)}
    assert image_to_time_too(letterboxed, 2) == 1 and image_to_time_too(letterboxed, 1) == 0  # or the smallest
    assert image_to_time_too({0: (4096, 12_000), 1: (4096, 40_000)}, 0) is None  # alike: one timing will do
    assert image_to_time_too({0: (10**6, 10**6), 1: (9 * 10**6, 4 * 10**6)}, 0) is None  # tiled: costly, same mix
    # timings that cannot come from non-negative rates: the first image's network rate alone
    assert ValidationCost.fit((small, 1.0), (large, 0.5)) == ValidationCost.measured(small, 1.0)
    assert ValidationCost.fit((small, 0.5)) == ValidationCost.measured(small, 0.5)  # one image: its network rate


def test_expected_epochs_count_validation() -> None:
    # 100 images at 10/s: 10 s per epoch; 100 s of training, validation free: 10 epochs
    assert expected_epochs(100, 10.0, 0.0, 100.0) == 10
    # a 3 s validation after the first epoch, then every 2 epochs (3 / (0.176 * 10) -> 2): fewer epochs
    assert expected_epochs(100, 10.0, 3.0, 100.0) == 8


@pytest.mark.parametrize(("batch_size", "epoch_images"), [(4, 8), (5, 9)])
def test_an_epoch_counts_the_images_it_trains(
    shapes_dataset: Path, tmp_path: Path, batch_size: int, epoch_images: int
) -> None:
    """The epoch estimate's images per epoch: whole batches where the loader drops the last one (9 images: batches
    of 4 drop one; batches of 5 keep the last, a set under two batches keeps every image)."""
    config = TrainConfig.from_options(tiny_options(shapes_dataset, tmp_path, batch_size=batch_size))
    learner = Learner(config, open_training_data(config), torch.device("cpu"))
    assert len(learner.train_set) == 9
    assert learner.epoch_images == epoch_images == sum(len(images) for images, _ in learner.start_epoch(1))


@pytest.fixture
def quick_race(monkeypatch: pytest.MonkeyPatch) -> None:
    """Races of a few seconds: the CPU minimum slice and budget made tiny."""
    monkeypatch.setattr(race_module, "MIN_RACE_BUDGET", 1.0)
    monkeypatch.setattr(race_module, "MIN_SLICE", {"cpu": 0.3, "gpu": 0.3})
    monkeypatch.setattr(race_module, "BUILD_SECONDS", 0.0)


def candidate(data: Path, out: Path, label: str, **options: Any) -> RaceCandidate:
    config = TrainConfig.from_options({**tiny_options(data, out, epochs=None, time_budget=12), **options})
    return RaceCandidate(label, config, dict(options))


def cpu_race(
    candidates: list[RaceCandidate],
    data: Any = None,
    build: Callable[[TrainConfig], Learner] | None = None,
    stop: Callable[[], str | None] = lambda: None,
) -> Race:
    """A race of ``candidates`` on the CPU in a 12 s budget, on their data's validation images."""
    data = data or open_training_data(candidates[0].config)
    device = torch.device("cpu")
    return Race(
        candidates,
        build=build or (lambda config: Learner(config, data, device)),
        progress=lambda seconds: seconds / 12.0,
        stop=stop,
        val_source=data.val_source,
        val_indices=data.val_indices,
        device=device,
        budget=12.0,
    )


def test_race_keeps_the_better_half_and_drops_a_diverging_candidate(
    shapes_dataset: Path, tmp_path: Path, quick_race: None
) -> None:
    candidates = [
        candidate(shapes_dataset, tmp_path, "small", img_size=32),
        candidate(shapes_dataset, tmp_path, "larger", img_size=48),
        candidate(shapes_dataset, tmp_path, "diverging", lr=1e12),
    ]
    data = open_training_data(candidates[0].config)
    device = torch.device("cpu")
    built: list[str] = []

    def build(config: TrainConfig) -> Learner:
        built.append(str(config.preprocess.img_size))
        return Learner(config, data, device)

    contest = cpu_race(candidates, data, build)
    assert contest.count == 3
    winner, learner, measured = contest.run()
    record = contest.record
    entries = record.entries
    assert [entry["label"] for entry in entries] == ["small", "larger", "diverging"]
    assert entries[2]["error"] == "the loss became not finite" and entries[2]["eliminated"] == 0
    assert winner in (0, 1) and entries[winner]["eliminated"] is None and learner.steps_done > 0
    assert learner.config is candidates[winner].config and measured.images_per_second > 0
    assert measured.validation is not None and record.validation_images
    scores = {i: entries[i]["rungs"][-1]["score"] for i in (0, 1) if entries[i]["rungs"]}
    if len(entries[1 - winner]["rungs"]) == len(entries[winner]["rungs"]):  # both reached the last rung
        assert scores[winner] >= scores[1 - winner]
    assert record.loser_seconds == pytest.approx(sum(e["seconds"] for i, e in enumerate(entries) if i != winner))
    assert json.loads(json.dumps(record.to_dict()))["entries"][0]["rungs"]


def test_the_better_half_goes_on_after_the_first_rung_however_far_behind(
    shapes_dataset: Path, tmp_path: Path, quick_race: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A first rung says which recipe learns the coarse layout fastest, not where it ends: the second of three goes
    on although it is more than CLEAR_MARGIN behind, and wins when it overtakes; the third stops."""
    monkeypatch.setattr(race_module, "RACE_CAP", 1.0)  # room for a second rung whatever this machine's speed
    scores = {0: [0.5, 0.55], 1: [0.5 - 2 * race_module.CLEAR_MARGIN, 0.6], 2: [0.1]}
    monkeypatch.setattr(
        Race, "score", lambda self, index, learner: scores[index][len(self.record.entries[index]["rungs"])]
    )
    sizes = (("whole", 32), ("crops", 48), ("third", 64))
    contest = cpu_race([candidate(shapes_dataset, tmp_path, name, img_size=size) for name, size in sizes])
    winner, _, _ = contest.run()
    entries = contest.record.entries
    assert [len(entry["rungs"]) for entry in entries] == [2, 2, 1] and entries[2]["eliminated"] == 0
    assert winner == 1 and entries[0]["eliminated"] == 1


def test_losers_never_take_more_than_the_cap(
    shapes_dataset: Path, tmp_path: Path, quick_race: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(race_module, "RACE_CAP", 0.01)  # the first rung already costs more: no second one
    sizes = (("a", 32), ("b", 48), ("c", 64))
    candidates = [candidate(shapes_dataset, tmp_path, name, img_size=size) for name, size in sizes]
    contest = cpu_race(candidates)
    winner, _, _ = contest.run()
    entries = contest.record.entries
    assert contest.count == 3 and [len(entry["rungs"]) for entry in entries] == [1, 1, 1]
    assert entries[winner]["rungs"][0]["score"] == max(entry["rungs"][0]["score"] for entry in entries)


def test_a_stop_signal_ends_the_race_with_the_best_so_far(
    shapes_dataset: Path, tmp_path: Path, quick_race: None
) -> None:
    candidates = [candidate(shapes_dataset, tmp_path, name, img_size=size) for name, size in (("a", 32), ("b", 48))]
    calls = {"n": 0}

    def stop() -> str | None:
        calls["n"] += 1
        return "SIGTERM" if calls["n"] > 3 else None

    contest = cpu_race(candidates, stop=stop)
    winner, learner, _ = contest.run()
    assert winner == 0 and learner.config is candidates[0].config


def test_planned_training_races_and_goes_on_with_the_winner(
    shapes_dataset: Path, tmp_path: Path, quick_race: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    options = {
        "data": str(shapes_dataset),
        "out": str(tmp_path / "run"),
        "device": "cpu",
        "time_budget": 20,
        "val_split": 0.25,
        "seed": 0,
        "model_kwargs": {"base_channels": 4, "depth": 2},
    }
    trainer = Trainer(TrainConfig.from_options(options), progress=False)
    assert trainer.plan is not None and len(trainer.plan.candidates) >= 2
    result = trainer.fit()
    plan = json.loads((tmp_path / "run" / "plan.json").read_text())
    race = plan["race"]
    assert race["raced"] and len(race["entries"]) >= 2 and race["entries"][race["winner"]]["eliminated"] is None
    assert plan["expected_epochs"] >= 1 and trainer.history
    winner_choices = race["entries"][race["winner"]]["choices"]
    saved = load_checkpoint(result.best_checkpoint).card
    for option, value in winner_choices.items():  # the run continued the winner: its options are the run's
        if option.startswith("preprocess."):
            assert getattr(saved.preprocess, option.split(".")[1]) == (
                tuple(value) if isinstance(value, list) else value
            )
    assert saved.training.plan["race"]["raced"]
    assert trainer.learner.steps_done > sum(1 for _ in trainer.history)  # the race's steps count


def test_the_plan_expects_the_epochs_after_its_race(
    shapes_dataset: Path, tmp_path: Path, quick_race: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    probed: list[float] = []  # seconds of the measured slice plan_training trains
    race_runs = Race.run

    def probe_run(self: Race) -> Any:
        result = race_runs(self)
        probed.append(self.record.seconds)
        return result

    spent: list[float] = []  # the seconds the clock is told will be spent before the epochs it expects
    clock_expects = RunClock.expected_epochs

    def recording(self: RunClock, *args: Any, before: float = 0.0) -> int:
        spent.append(before)
        return clock_expects(self, *args, before=before)

    monkeypatch.setattr(Race, "run", probe_run)
    monkeypatch.setattr(RunClock, "expected_epochs", recording)
    options = {"data": str(shapes_dataset), "device": "cpu", "time_budget": 60, "val_split": 0.25, "seed": 0}
    plan = plan_training(TrainConfig.from_options({**options, "model_kwargs": {"base_channels": 4, "depth": 2}}))
    racers, seconds = plan.planned_race
    assert racers >= 2 and len(probed) == 1 and seconds > probed[0]
    # as the run counts its epochs: after the race; the measured slice was the winner's first rung
    assert spent == [pytest.approx(seconds - probed[0])]
    assert f"after a race of {racers}" in plan.format() and plan.to_dict()["planned_race"]["candidates"] == racers
    # every racer's epochs should it win: the leader's measured, the others' scaled by their speed
    expected = [c.expected_epochs for c in plan.candidates if c.expected_epochs is not None]
    assert len(expected) == racers and expected[0] == plan.epochs and "epochs if it wins" in plan.format()


def measured_slice(data: Path, tmp_path: Path) -> dict[str, Any]:
    """A planned 8-second run without a race: the leader trains after a measured slice."""
    return {
        "data": str(data),
        "out": str(tmp_path / "run"),
        "device": "cpu",
        "time_budget": 8,
        "val_split": 0.25,
        "race": False,
        "model_kwargs": {"base_channels": 4, "depth": 2},
    }


def test_no_race_trains_the_rule_based_plan_after_a_measured_slice(shapes_dataset: Path, tmp_path: Path) -> None:
    trainer = Trainer(TrainConfig.from_options(measured_slice(shapes_dataset, tmp_path)), progress=False)
    trainer.fit()
    race = json.loads((tmp_path / "run" / "plan.json").read_text())["race"]
    assert not race["raced"] and race["skipped"] == "--no-race" and race["entries"][0]["label"] == "as configured"
    assert race["entries"][0]["rungs"][0]["steps"] >= race_module.PROBE_STEPS  # the measured slice trained, was kept


def test_class_weights_are_decided_again_on_the_measured_epochs(
    shapes_dataset: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    decided_on: list[float] = []

    def rule(fingerprint: Any, epochs: float | None, measured: bool = False) -> tuple[str | None, str]:
        if measured:
            decided_on.append(float(epochs or 0.0))
        return ("auto", f"~{epochs:.0f} epochs (measured)") if measured else (None, "first guess: enough")

    monkeypatch.setattr(planner_module, "weights_rule", rule)  # the first guess and the measurement disagree
    expected: list[int] = []  # what the run's clock expects in the rest of the budget, each time it is asked
    clock_expects = RunClock.expected_epochs

    def recording(self: RunClock, *args: Any) -> int:
        expected.append(clock_expects(self, *args))
        return expected[-1]

    monkeypatch.setattr(RunClock, "expected_epochs", recording)

    def weighted(criterion: torch.nn.Module) -> bool:
        return any(getattr(part, "class_weights", None) is not None for part in criterion.modules())

    trainer = Trainer(TrainConfig.from_options(measured_slice(shapes_dataset, tmp_path)), progress=False)
    assert trainer.config.class_weights is None and not weighted(trainer.learner.criterion)
    trainer.fit()
    assert trainer.config.class_weights == "auto" and trainer.learner.config.class_weights == "auto"
    assert weighted(trainer.learner.criterion)  # the loss was built again, weighted
    plan = json.loads((tmp_path / "run" / "plan.json").read_text())
    # decided on all the model trains: the epochs expected after the measured slice, and the slice's own
    slice_images = plan["race"]["entries"][0]["rungs"][0]["images"]
    assert slice_images > 0 and len(decided_on) == 1
    assert decided_on[0] == pytest.approx(expected[0] + slice_images / trainer.learner.epoch_images)
    choices = {c["option"]: c for c in plan["choices"]}
    assert choices["class_weights"]["value"] == "auto" and "measured" in choices["class_weights"]["reason"]
    assert "class_weights: auto" in (tmp_path / "run" / "config.yaml").read_text()
    assert load_checkpoint(tmp_path / "run" / "last.pt").card.training.config["class_weights"] == "auto"


def test_pinned_options_are_never_raced(shapes_dataset: Path, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    from segkit.planning.planner import make_plan

    config = TrainConfig.from_options(
        {
            "data": str(shapes_dataset),
            "device": "cpu",
            "time_budget": 600,
            "img_size": 32,
            "model_kwargs": {"base_channels": 4, "depth": 2},
        }
    )
    plan = make_plan(config, open_training_data(config), torch.device("cpu"))
    assert [set(c.choices) for c in plan.candidates] == [set(), {"lr"}]  # input and network pinned: the lr races
    config = TrainConfig.from_options({**config.to_dict(), "user_options": None, "lr": 0.01})
    config.user_options = ["data", "device", "time_budget", "preprocess.img_size", "model_kwargs", "lr"]
    assert len(make_plan(config, open_training_data(config), torch.device("cpu")).candidates) == 1


def test_cpu_bfloat16_can_be_turned_off(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SEGKIT_CPU_BF16", "0")
    assert probe.bf16_supported(torch.device("cpu")) is False


def test_validation_scores_a_spread_subset_when_all_images_would_not_fit(
    shapes_dataset: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from segkit.training import budget

    monkeypatch.setattr(budget, "VALIDATION_CAP", 1e-9)  # no validation fits: one image, evenly placed
    options = tiny_options(shapes_dataset, tmp_path / "run", epochs=None, time_budget=6, val_split=0.34)
    trainer = Trainer(TrainConfig.from_options(options), progress=False)
    result = trainer.fit()
    assert len(trainer.data.val_indices) == 4 and trainer.record.val_indices == spread(trainer.data.val_indices, 1)
    assert result.best_metrics["num_images"] == 1
    assert load_checkpoint(result.best_checkpoint).card.training.data["val_images_scored"] == 1
    resumed = load_checkpoint(tmp_path / "run" / "last.pt").resume["progress"]
    assert resumed["val_indices"] == trainer.record.val_indices  # a resumed run scores the same images
