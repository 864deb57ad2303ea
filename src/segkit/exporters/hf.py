"""Hugging-Face-style model folders: ``model.safetensors`` + ``config.json`` (the model card) + ``README.md``.

``segkit export CKPT --format hf --out DIR`` writes such a folder; every command that takes
a model (``predict``, ``evaluate``, ``serve``, ``segkit.load``) accepts it in place of a
``.pt`` checkpoint, through :func:`segkit.checkpoint.load_pretrained`. The weights are safetensors (no
pickle: loading runs no code), ``config.json`` is :meth:`ModelCard.to_dict`, and the
README is a model card as the Hugging Face Hub shows it (YAML metadata, classes, metrics,
data, intended use). :func:`push_to_hub` uploads the folder when ``huggingface_hub`` is
installed and a token is set.
"""

from __future__ import annotations

import json
import math
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from segkit.checkpoint import CONFIG_FILE, WEIGHTS_FILE, Checkpoint, ModelCard, open_checkpoint
from segkit.errors import SegkitError
from segkit.files import make_staging_dir

README_FILE = "README.md"


@dataclass(frozen=True)
class HubExport:
    """What ``segkit export --format hf`` wrote.

    Attributes:
        path: the folder.
        url: the Hugging Face Hub repository it was uploaded to, if it was.
    """

    path: Path
    url: str | None = None

    def format(self) -> str:
        """Lines for the command line."""
        lines = [f"wrote {self.path} ({WEIGHTS_FILE}, {CONFIG_FILE}, {README_FILE})"]
        return "\n".join(lines + [f"uploaded to {self.url}"] * (self.url is not None))


def export_hf(checkpoint: str | Path | Checkpoint, out: str | Path, *, overwrite: bool = False) -> Path:
    """Write a checkpoint as a Hugging-Face-style folder.

    Args:
        checkpoint: a ``.pt`` checkpoint, an exported folder, or a loaded :class:`~segkit.checkpoint.Checkpoint`.
        out: the folder to write; it must not exist or be empty unless ``overwrite``.
        overwrite: replace an existing folder.

    Returns:
        The folder.

    Raises:
        SegkitError: unreadable checkpoint, or ``out`` exists (and is not empty) without ``overwrite``.
    """
    from safetensors.torch import save_file

    out = Path(out)
    if out.exists() and not out.is_dir():
        raise SegkitError(out, "exists and is not a folder")
    if out.is_dir() and any(out.iterdir()) and not overwrite:
        raise SegkitError(out, "already exists and is not empty; pass --overwrite to replace it")
    loaded = open_checkpoint(checkpoint)
    card = loaded.card
    # Tensors are copied so that none share memory (safetensors refuses shared storage).
    weights = {name: tensor.detach().cpu().contiguous().clone() for name, tensor in loaded.state_dict.items()}
    staging = make_staging_dir(out, prefix=f".{out.name}.partial.")
    try:
        save_file(weights, str(staging / WEIGHTS_FILE), metadata={"format": "pt", "library": "segkit"})
        (staging / CONFIG_FILE).write_text(
            json.dumps(card.to_dict(), indent=2, allow_nan=False) + "\n", encoding="utf-8"
        )
        (staging / README_FILE).write_text(model_card_markdown(card), encoding="utf-8")
        if out.exists():
            shutil.rmtree(out)
        staging.rename(out)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return out


def push_to_hub(folder: str | Path, repo_id: str, *, private: bool = False, token: str | None = None) -> str:
    """Upload an exported folder to a Hugging Face Hub model repository (created if missing).

    Args:
        folder: a folder written by :func:`export_hf`.
        repo_id: ``user/name`` or ``organisation/name``.
        private: create the repository as private.
        token: a Hub token (default: ``HF_TOKEN`` or the one ``hf auth login`` saved).

    Returns:
        The repository's URL.

    Raises:
        SegkitError: ``huggingface_hub`` is not installed, no token is set, or the upload fails.
    """
    try:
        import huggingface_hub
    except ImportError:
        raise SegkitError(None, "--push-to-hub needs the huggingface_hub package: pip install 'segkit[hub]'") from None
    token = token or huggingface_hub.get_token()
    if not token:
        raise SegkitError(None, "--push-to-hub needs a Hugging Face token: set HF_TOKEN or run `hf auth login`")
    api = huggingface_hub.HfApi(token=token)
    try:
        url = api.create_repo(repo_id, private=private, repo_type="model", exist_ok=True)
        api.upload_folder(
            folder_path=str(folder), repo_id=repo_id, repo_type="model", commit_message="Upload segkit model"
        )
    except Exception as error:  # network, authentication and Hub errors come as many types
        raise SegkitError(repo_id, f"upload to the Hugging Face Hub failed: {error}") from None
    return str(url)


def _number(value: Any) -> str:
    return "–" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.4f}"


def model_card_markdown(card: ModelCard) -> str:
    """The README of an exported folder: Hub metadata, what the model does, classes, metrics, data, use."""
    spec, training = card.model, card.training
    height, width = card.preprocess.img_size
    tags = ["segkit", "semantic-segmentation", spec.name]
    lines = [
        "---",
        "library_name: segkit",
        "pipeline_tag: image-segmentation",
        "tags:",
        *(f"- {tag}" for tag in tags),
        "---",
        "",
        f"# {spec.name} for {', '.join(card.classes[:6])}{' …' if len(card.classes) > 6 else ''}",
        "",
        f"A semantic segmentation model trained with segkit {card.segkit_version}: "
        f"`{spec.name}` with options `{json.dumps(spec.kwargs)}`, {card.num_classes} classes, "
        + (
            f"binary mode (one sigmoid channel, threshold {card.threshold:g})"
            if card.binary
            else "softmax over the classes"
        )
        + f". Input images are resized by `{card.preprocess.resize}` to {width}×{height}; masks come back at each "
        "image's original size.",
        "",
        "## Classes",
        "",
        "| index | class | colour |",
        "|---|---|---|",
        *(
            f"| {index} | {name} | `#{colour[0]:02x}{colour[1]:02x}{colour[2]:02x}` |"
            for index, (name, colour) in enumerate(zip(card.classes, card.palette))
        ),
        "",
        f"Mask value {card.ignore_index} marks unlabelled pixels (left out of training and metrics)."
        + (
            ""
            if card.background is None
            else f" Class {card.background} (`{card.classes[card.background]}`) is the background."
        ),
        "",
    ]
    metrics = training.metrics
    if metrics.get("per_class"):
        lines += [
            "## Metrics",
            "",
            f"Validation metrics of the best epoch ({training.best_epoch or training.epoch}), measured during "
            "training at the network's input size:",
            "",
            f"mIoU {_number(metrics.get('mIoU'))}, pixel accuracy {_number(metrics.get('pixel_accuracy'))}, "
            f"mDice {_number(metrics.get('mDice'))} on {metrics.get('num_images', '?')} images.",
            "",
            "| class | IoU | Dice | precision | recall |",
            "|---|---|---|---|---|",
            *(
                f"| {name} | {_number(row.get('iou'))} | {_number(row.get('dice'))} | {_number(row.get('precision'))} "
                f"| {_number(row.get('recall'))} |"
                for name, row in metrics["per_class"].items()
            ),
            "",
        ]
    config = training.config
    if training.epoch or config:
        data = training.data or ({"folder": config["data"]} if config.get("data") else {})
        lines += ["## Training data and recipe", ""]
        if data:
            lines.append("Data: " + ", ".join(f"{key} {value}" for key, value in data.items()) + ".")
        if config.get("val"):
            lines.append(f"Validation: the folder {config['val']}.")
        elif config:
            lines.append(f"Validation: {config.get('val_split', 0.2):g} of the images held out by name.")
        recipe = ", ".join(
            f"{key} {config[key]}"
            for key in ("optimizer", "lr", "batch_size", "loss", "scheduler", "augment")
            if config.get(key) is not None
        )
        lines += [
            f"Trained {training.epoch} epochs"
            + (f" in {training.seconds / 60:.1f} min" if training.seconds else "")
            + (f" ({recipe})" if recipe else "")
            + ".",
            "",
        ]
    lines += [
        "## Intended use and limitations",
        "",
        "Segmenting images like those it was trained on, into the classes above. It has seen only its training "
        "data: check it on your own images (`segkit evaluate`) before relying on it, especially on other cameras, "
        "resolutions or scenes, and for the classes with low IoU above.",
        "",
        "## How to use",
        "",
        "```",
        "pip install segkit",
        "segkit predict THIS_FOLDER photos/ --out masks/ --color",
        "segkit evaluate THIS_FOLDER data/ --report report.html",
        "```",
        "",
        "```python",
        "import segkit",
        "",
        'model = segkit.load("THIS_FOLDER")',
        'mask = model.predict("photo.jpg")  # (H, W) uint8 class indices at the photo\'s size',
        "```",
        "",
        f"Files: `{WEIGHTS_FILE}` (weights), `{CONFIG_FILE}` (the segkit model card: architecture, classes, colours, "
        "preprocessing, training summary).",
        "",
    ]
    return "\n".join(lines)
