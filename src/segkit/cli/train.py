"""``segkit train DATA``: train a model on a folder of images and masks."""

from __future__ import annotations

import argparse
from typing import Any

from segkit.cli.common import parse_model_kwargs


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "train", help="train a model", description="Train a segmentation model; writes checkpoints, curves and samples to --out."
    )
    parser.add_argument("data", nargs="?", help="training data folder (labelme, images/+masks/, VOC, or with train/ val/)")
    data = parser.add_argument_group("data")
    data.add_argument("--val", help="validation data folder (default: a val/ split, else --val-split)")
    data.add_argument("--val-split", type=float, help="fraction of the data held out, deterministic by name (default 0.2)")
    data.add_argument("--masks", help="name of the mask folder beside images/ (default masks)")
    data.add_argument("--colors", help="colour table (JSON or CSV) for RGB colour-coded masks")
    data.add_argument("--classes", help="class names: a file (one per line) or a,b,c")
    data.add_argument("--ignore-index", type=int, help="mask value ignored by loss and metrics (default 255)")
    data.add_argument("--img-size", type=int, nargs="+", metavar="N", help="network input size: N or H W (default 256)")
    data.add_argument("--resize", choices=["letterbox", "resize", "crop"], help="resize policy (default letterbox)")
    data.add_argument("--augment", choices=["none", "light", "default"], help="augmentation strength (default default)")
    data.add_argument("--num-workers", type=int, help="DataLoader worker processes (default 0)")
    model = parser.add_argument_group("model")
    model.add_argument("--model", help="architecture name, see `segkit models` (default unet)")
    model.add_argument("--model-kwargs", metavar="K=V,...", help="model options, e.g. base_channels=16,depth=4")
    model.add_argument("--encoder", help="encoder of smp-based models, e.g. resnet50, efficientnet-b3, tu-convnext_tiny")
    model.add_argument("--pretrained", action="store_true", default=None, help="start from the library's ImageNet encoder weights (downloads)")
    model.add_argument("--weights", metavar="FILE", help="start from a local checkpoint, state dict or .safetensors (mismatched heads re-initialised)")
    model.add_argument("--freeze-encoder", type=int, metavar="N", help="keep the encoder frozen for the first N epochs")
    model.add_argument("--mode", choices=["auto", "multiclass", "binary"], help="binary = one sigmoid channel (default auto: binary for 2 classes)")
    model.add_argument("--threshold", type=float, help="binary-mode probability threshold (default 0.5)")
    optim = parser.add_argument_group("optimisation")
    optim.add_argument("--epochs", type=int, help="number of epochs (default 50, or as many as fit --time-budget)")
    optim.add_argument("--time-budget", help="stop after this wall time, e.g. 90s, 10m, 1.5h")
    optim.add_argument("--batch-size", type=int, help="global batch size (default 8)")
    optim.add_argument("--lr", type=float, help="peak learning rate (default 1e-3)")
    optim.add_argument("--weight-decay", type=float, help="weight decay (default 1e-4)")
    optim.add_argument("--optimizer", choices=["adamw", "adam", "sgd"], help="optimiser (default adamw)")
    optim.add_argument("--scheduler", choices=["cosine", "poly", "constant"], help="learning-rate schedule after warm-up (default cosine)")
    optim.add_argument("--warmup-epochs", type=float, help="linear warm-up length in epochs (default 1)")
    optim.add_argument("--loss", help="ce, bce, dice, focal, tversky, lovasz or a sum like ce+dice, 0.5*ce+dice (default ce+dice)")
    optim.add_argument("--class-weights", help="auto (inverse median frequency) or w0,w1,...")
    optim.add_argument("--label-smoothing", type=float, help="cross-entropy label smoothing (default 0)")
    optim.add_argument("--compile", action="store_true", default=None, help="torch.compile the model for training (slow start, faster steps on GPU)")
    optim.add_argument("--precision", choices=["32", "bf16", "16-mixed"], help="float32, bfloat16 autocast, or float16 mixed precision (default 32)")
    run_group = parser.add_argument_group("run")
    run_group.add_argument("--config", help="YAML file of options (keys as in config.yaml); command-line options win")
    run_group.add_argument("--out", help="run folder (default runs/train, runs/train2, ...)")
    run_group.add_argument("--resume", metavar="LAST_PT", help="continue a run from its last.pt")
    run_group.add_argument("--overwrite", action="store_true", default=None, help="replace the run already in --out")
    run_group.add_argument("--save-every", type=int, help="also keep epoch_NNN.pt every N epochs")
    run_group.add_argument("--patience", type=int, help="stop after N epochs without a validation mIoU gain (0 = off)")
    run_group.add_argument("--device", help="auto, cpu, cuda, cuda:N or mps (default auto)")
    run_group.add_argument("--seed", type=int, help="random seed (default 0)")
    parser.set_defaults(func=run)


def collect_options(args: argparse.Namespace) -> dict[str, Any]:
    """Options given on the command line (unset ones are left to the config file or defaults)."""
    names = (
        "data", "val", "val_split", "masks", "colors", "classes", "ignore_index", "resize", "augment", "num_workers",
        "model", "encoder", "pretrained", "weights", "freeze_encoder", "mode", "threshold", "epochs", "time_budget", "batch_size", "lr", "weight_decay", "optimizer",
        "scheduler", "warmup_epochs", "loss", "label_smoothing", "precision", "compile", "out", "resume", "overwrite",
        "save_every", "patience", "device", "seed",
    )
    options = {name: getattr(args, name) for name in names if getattr(args, name) is not None}
    if args.img_size is not None:
        options["img_size"] = args.img_size[0] if len(args.img_size) == 1 else list(args.img_size[:2])
    if args.model_kwargs is not None:
        options["model_kwargs"] = parse_model_kwargs(args.model_kwargs)
    if args.class_weights is not None:
        weights = args.class_weights.strip()
        options["class_weights"] = "auto" if weights == "auto" else [float(w) for w in weights.split(",")]
    return options


def run(args: argparse.Namespace) -> int:
    from segkit.errors import SegkitError
    from segkit.checkpoint import load_checkpoint
    from segkit.training.config import TrainConfig
    from segkit.training.trainer import train

    options = collect_options(args)
    if args.config:
        config = TrainConfig.from_yaml(args.config, **options)
    elif args.resume and "data" not in options:
        saved = load_checkpoint(args.resume).card.training.config
        config = TrainConfig.from_dict({**saved, **options})
    else:
        config = TrainConfig(**options)
    if not config.data:
        raise SegkitError(None, "no training data: give DATA, or a --config with data:")
    result = train(config)
    print(f"best checkpoint: {result.best_checkpoint}")
    print(f"last checkpoint: {result.last_checkpoint}")
    print(f"history: {result.out / 'history.csv'}, curves: {result.out / 'curves.png'}, samples: {result.out / 'samples'}")
    miou = result.best_metrics.get("mIoU")
    print(f"best validation mIoU: {miou:.4f}" if miou is not None else "best validation mIoU: n/a")
    return 0
