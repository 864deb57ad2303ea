"""Every registered model trains through the real `segkit train` command line; weights options."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from segkit.checkpoint import load_checkpoint
from segkit.cli import main
from segkit.models import list_models, model_info


def _kwargs_argument(kwargs: dict) -> str:
    return ",".join(f"{key}={value!r}".replace(" ", "") for key, value in kwargs.items())


@pytest.mark.slow
@pytest.mark.parametrize("name", list_models())
def test_segkit_train_every_model(name: str, shapes_dataset: Path, tmp_path: Path) -> None:
    kwargs = model_info(name).test_kwargs
    argv = [
        "train",
        str(shapes_dataset),
        "--model",
        name,
        "--img-size",
        "32",
        "--epochs",
        "1",
        "--batch-size",
        "4",
        "--device",
        "cpu",
        "--out",
        str(tmp_path / "run"),
    ]
    if kwargs:
        argv += ["--model-kwargs", _kwargs_argument(kwargs)]
    assert main(argv) == 0
    spec = load_checkpoint(tmp_path / "run" / "best.pt").card.model
    assert spec.name == name and spec.kwargs == kwargs


def test_weights_file_and_frozen_encoder(shapes_dataset: Path, tmp_path: Path) -> None:
    kwargs = _kwargs_argument(model_info("unet-encoder").test_kwargs)
    common = [
        "--model",
        "unet-encoder",
        "--model-kwargs",
        kwargs,
        "--img-size",
        "32",
        "--batch-size",
        "4",
        "--device",
        "cpu",
    ]
    assert main(["train", str(shapes_dataset), *common, "--epochs", "1", "--out", str(tmp_path / "a")]) == 0
    first = load_checkpoint(tmp_path / "a" / "best.pt").state_dict
    assert (
        main(
            [
                "train",
                str(shapes_dataset),
                *common,
                "--epochs",
                "2",
                "--out",
                str(tmp_path / "b"),
                "--weights",
                str(tmp_path / "a" / "best.pt"),
                "--freeze-encoder",
                "1",
                "--lr",
                "1e-2",
            ]
        )
        == 0
    )
    state = load_checkpoint(tmp_path / "b" / "last.pt")
    history = state.card.training.history
    assert len(history) == 2
    encoder_keys = [k for k in first if ".encoder." in f".{k}" and first[k].is_floating_point()]
    assert encoder_keys
    # Epoch 1 trained with the encoder frozen at the loaded weights; epoch 2 trained it too.
    changed = [k for k in encoder_keys if not torch.equal(first[k], state.state_dict[k])]
    assert changed


def test_pretrained_without_network_is_one_clear_error(
    shapes_dataset: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import socket

    def no_network(*args, **kwargs):
        raise OSError("network is unreachable")

    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", no_network)
    monkeypatch.setattr(socket.socket, "connect", no_network)  # whatever download path is taken
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))  # no cached weights either
    assert (
        main(
            [
                "train",
                str(shapes_dataset),
                "--model",
                "mobilenetv2-unet",
                "--pretrained",
                "--epochs",
                "1",
                "--img-size",
                "32",
                "--device",
                "cpu",
                "--out",
                str(tmp_path / "run"),
            ]
        )
        == 2
    )
    error = capsys.readouterr().err.strip().splitlines()[-1]
    assert "no ImageNet weights for encoder mobilenet_v2 here and no network" in error and "--weights FILE" in error
    assert not (tmp_path / "run" / "best.pt").exists()
