"""Plain functions that build what a training run needs: data, model, loss, optimiser.

The :class:`~segkit.training.trainer.Trainer` only calls these; a benchmark or a test can
call them too, to get exactly the pieces segkit trains with.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from segkit.checkpoint import Checkpoint, ModelCard
from segkit.config import TrainConfig
from segkit.errors import SegkitError

logger = logging.getLogger(__name__)


@dataclass
class TrainingData:
    """The samples of a run.

    Attributes:
        train_source: where training samples come from.
        train_indices: the training samples of ``train_source``.
        val_source: where validation samples come from (``train_source`` with ``--val-split``).
        val_indices: the validation samples of ``val_source``.
        classes: class names in index order.
        color_table: the dataset's colour table (its colours become the card's palette), if any.
        classes_origin: where the class names came from.
        problems: one line on what opening the data found wrong (images without mask ...), or empty.
    """

    train_source: Any
    train_indices: list[int]
    val_source: Any
    val_indices: list[int]
    classes: list[str]
    color_table: Any = None
    classes_origin: str = ""
    problems: str = ""

    def release_training_images(self) -> None:
        """Free the decoded training images (not the validation ones): the training dataset keeps its own copies."""
        if self.train_source is not self.val_source:
            self.train_source.release(self.train_indices)

    def facts(self, path: str, val_scored: int) -> dict[str, Any]:
        """What the model card says about the data: its folder, the image counts, where the classes came from."""
        return {
            "path": path,
            "train_images": len(self.train_indices),
            "val_images": len(self.val_indices),
            "val_images_scored": val_scored,
            "classes_from": self.classes_origin,
        }

    def describe(self, train_images: int, binary: bool) -> str:
        """One line: the training and validation images, the classes, the mode."""
        origin = f", from {self.classes_origin}" if self.classes_origin else ""
        mode = "binary mode (one sigmoid channel)" if binary else "multi-class mode (softmax)"
        return (
            f"{train_images} training, {len(self.val_indices)} validation images; "
            f"{len(self.classes)} classes ({', '.join(self.classes)}{origin}); {mode}"
        )


def open_training_data(config: TrainConfig) -> TrainingData:
    """Open the training and validation samples as ``config`` says (``--val``, a val/valid split, or ``--val-split``)."""
    from segkit.data.dataset import DecodedSource
    from segkit.data.sources import open_source, split_by_name, usable, validation_images

    def open_folder(path: str, split: str | None, classes: Any) -> Any:
        opened = open_source(
            path,
            split=split,
            masks=config.masks,
            colors=config.colors,
            classes=classes,
            ignore_index=config.preprocess.ignore_index,
            images=config.images,
            roi_masks=config.roi_masks,
            fit_masks=config.fit_masks,
            label_map=config.label_map,
        )
        return usable(opened, config.skip_bad)  # every unusable file said at once, before anything is decoded

    train_source = open_folder(config.data, None, config.classes)
    classes = list(train_source.classes)
    where = validation_images(config.data, config.val, config.masks, config.val_split, config.images)
    if where.held_out is None and not config.val and "val_split" in (config.user_options or ()):
        logger.warning("--val-split is not used: %s has a %s split, which validates", config.data, where.split)
    if where.held_out is None:
        val_source = DecodedSource(open_folder(str(where.folder), where.split, classes))
        train = DecodedSource(train_source)
        train_indices, val_indices = list(range(len(train))), list(range(len(val_source)))
    else:
        train = val_source = DecodedSource(train_source)
        train_indices, val_indices = split_by_name([sample.name for sample in train_source.samples], config.val_split)
    if not val_indices:
        raise SegkitError(config.data, "no validation images: use --val DATA or --val-split > 0")
    if len(val_source.classes) != len(classes):
        raise SegkitError(
            config.val or config.data,
            f"validation classes {list(val_source.classes)} differ from training classes {classes}",
        )
    return TrainingData(
        train,
        train_indices,
        val_source,
        val_indices,
        classes,
        train_source.color_table,
        train_source.classes_origin,
        train_source.problem_summary(),
    )


def data_fingerprint(data: TrainingData) -> str:
    """A digest of which files train and validate (names and byte sizes): a resumed run checks it is the same data."""
    import hashlib

    digest = hashlib.sha256()
    for role, source, indices in (
        ("train", data.train_source, data.train_indices),
        ("val", data.val_source, data.val_indices),
    ):
        samples = source.samples
        for index in sorted(indices, key=lambda i: samples[i].name):
            sample = samples[index]
            files = [path for path in (sample.image, sample.mask, sample.annotation) if path is not None]
            sizes = ",".join(str(path.stat().st_size) if path.is_file() else "-" for path in files)
            # File names need not be UTF-8 (surrogate-escaped bytes): hash them as the bytes they are.
            digest.update(f"{role}:{sample.name}:{sizes}\n".encode("utf-8", "surrogateescape"))
    return digest.hexdigest()


def check_resumable(config: TrainConfig, data: TrainingData, fingerprint: str, checkpoint: Checkpoint) -> None:
    """A resumed run trains on what it started with: the same classes (else an error) and images (else ``--force``)."""
    card, path = checkpoint.card, config.resume
    if list(data.classes) != list(card.classes):
        raise SegkitError(
            path,
            f"the run was trained on the classes {card.classes}, but {config.data} has {data.classes}: "
            "resume it with its own data, or start a new run",
        )
    started = (checkpoint.resume or {}).get("data", {}).get("fingerprint")
    if started and started != fingerprint:
        if not config.force:
            raise SegkitError(
                path,
                f"{config.data} holds other images than the run started with (same classes); add --force to "
                "resume on them anyway (best.pt then compares scores from different validation images)",
            )
        logger.warning("resuming on other images than the run started with (--force)")


def is_binary(config: TrainConfig, classes: list[str]) -> bool:
    """Binary mode (one sigmoid channel): asked for, or ``auto`` with two classes."""
    binary = config.mode == "binary" or (config.mode == "auto" and len(classes) == 2)
    if binary and len(classes) != 2:
        raise SegkitError(config.data, f"--mode binary needs 2 classes, the data has {len(classes)}")
    return binary


def model_kwargs(config: TrainConfig) -> dict[str, Any]:
    """The model's options as stored in the card (never ``pretrained``: prediction must not download)."""
    kwargs = dict(config.model_kwargs)
    if config.encoder:
        kwargs["encoder"] = config.encoder
    return kwargs


def build_model(config: TrainConfig, card: ModelCard, device: torch.device) -> nn.Module:
    """The card's model on ``device``, with ImageNet encoder weights (``--pretrained``) or a weights file."""
    from segkit.models.pretrained import load_weights
    from segkit.models.weights import pretrained_model

    if config.pretrained:
        model = pretrained_model(card.model)
    else:
        model = card.model.build()
    if config.weights:
        load_weights(model, config.weights)
    model.to(device)
    if config.channels_last:
        model.to(memory_format=torch.channels_last)
    return model


def build_loss(
    config: TrainConfig, classes: list[str], binary: bool, per_image_counts: np.ndarray, device: torch.device
) -> nn.Module:
    """The loss of ``--loss`` with ``--class-weights`` (``auto``: inverse median frequency of the training masks)."""
    from segkit.losses import class_weights_from_counts, create_loss

    weights = None
    if config.class_weights == "auto":
        weights = class_weights_from_counts(per_image_counts)
        logger.info("class weights (inverse median frequency): %s", ", ".join(f"{w:.3g}" for w in weights.tolist()))
    elif config.class_weights is not None:
        weights = torch.tensor([float(w) for w in config.class_weights], dtype=torch.float32)
        if len(weights) != len(classes):
            raise SegkitError(None, f"--class-weights has {len(weights)} values for {len(classes)} classes")
    return create_loss(
        config.loss,
        num_classes=len(classes),
        ignore_index=config.preprocess.ignore_index,
        class_weights=None if weights is None else weights.to(device),
        binary=binary,
        label_smoothing=config.label_smoothing,
    ).to(device)


def build_optimizer(config: TrainConfig, model: nn.Module) -> torch.optim.Optimizer:
    """``--optimizer`` over all parameters (those of a frozen encoder too: they train once unfrozen)."""
    parameters = list(model.parameters())
    if config.optimizer == "sgd":
        return torch.optim.SGD(
            parameters, lr=config.lr, momentum=config.momentum, weight_decay=config.weight_decay, nesterov=True
        )
    if config.optimizer == "adam":
        return torch.optim.Adam(parameters, lr=config.lr, weight_decay=config.weight_decay)
    return torch.optim.AdamW(parameters, lr=config.lr, weight_decay=config.weight_decay)
