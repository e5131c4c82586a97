"""Every option of a training run, in one validated object (also what ``config.json`` holds)."""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from typing import Any

from ..errors import ConfigError, close_matches, unknown_name

OPTIMIZERS = ("adamw", "sgd")
SCHEDULERS = ("cosine", "none")
HEAD_INITS = ("fit", "random")
AUTO_AUGMENTS = ("none", "trivialaugment", "randaugment")


def _opt(default: Any, doc: str) -> Any:
    return field(default=default, metadata={"doc": doc})


@dataclass
class TrainConfig:
    """Every option that shapes a training run; validated on creation and saved as ``config.json``,
    so resuming repeats it. Each field's ``doc`` (in its metadata) says what it does; the CLI shows it as help."""

    data: str = _opt("", "Folder with train/ and val/ class folders, or a folder of class folders (split by "
                         "`val_fraction` and `seed`).")
    model: str = _opt("resnet18", "A registered backbone name, or timm/<name> for any timm model.")
    strategy: str = _opt("auto", "auto, or a registered strategy: feature-extraction, partial, full, gradual.")
    epochs: int = _opt(5, "Maximum epochs of fine-tuning; the best epoch by validation accuracy is kept.")
    batch_size: int = _opt(32, "Images per step.")
    seed: int = _opt(0, "Seed of the split, head initialisation, shuffling and augmentation.")
    weights: str = _opt("default", "default (pretrained), none (random init), or a state_dict file (.safetensors/.pth).")
    head_init: str = _opt("fit", "fit: the head is first fitted to convergence on the frozen features (logistic regression, "
                                 "L-BFGS); feature extraction ends there and fine-tuning starts from it. random: a random "
                                 "head trained by the optimizer for `epochs`.")
    head_l2: str = _opt("auto", "L2 strength of the fitted head (on standardised features), or auto: chosen by "
                                "3-fold log loss on the training split.")
    head_lr: float = _opt(1e-3, "Learning rate of the new head.")
    backbone_lr: float = _opt(1e-4, "Learning rate of the trainable backbone layers.")
    optimizer: str = _opt("adamw", "adamw, or sgd (momentum 0.9).")
    scheduler: str = _opt("cosine", "cosine (per epoch) or none.")
    weight_decay: float = _opt(1e-4, "Decoupled weight decay (AdamW) or L2 (SGD).")
    lr: str | None = _opt(None, "auto: run the LR finder first and train at its suggestion ('valley'), `backbone_lr` "
                                "scaled by the same factor; recorded in model.json and the report. None: `head_lr`.")
    layer_decay: float | None = _opt(None, "Layer-wise LR decay D (timm): backbone stage i of n trains at backbone_lr * "
                                           "D**(n-1-i). None: one backbone LR.")
    frozen_epochs: int = _opt(1, "gradual: epochs of head-only training before stages unfreeze, one per epoch from the top.")
    auto_augment: str = _opt("none", "Extra augmentation while fine-tuning: none, trivialaugment or randaugment.")
    mixup: float = _opt(0.0, "Mixup alpha while fine-tuning (0: off; 0.2 is common).")
    cutmix: float = _opt(0.0, "CutMix alpha while fine-tuning (0: off; 1.0 is common); with mixup, one per batch.")
    freeze_bn: bool = _opt(True, "Keep BatchNorm running statistics fixed (eval mode) while fine-tuning; their affine "
                                 "weights still train. Batch statistics of small batches move the features the fitted "
                                 "head was fitted on (BENCHMARKS.md, issue 22).")
    ema: float = _opt(0.0, "Weight EMA decay while fine-tuning (0: off; 0.999 is common): validation, the best model and "
                           "the saved weights use the average, warmed up as min(D, (1+t)/(10+t)) over steps t.")
    input_size: int | str = _opt("auto", "The network's input side in px, or auto: the weights' size, unless the training "
                                         "images' median shorter side is at most half of it; then 2x that side (at least "
                                         "128), recorded in the run (BENCHMARKS.md, issue 22).")
    label_smoothing: float = _opt(0.0, "Label smoothing of the cross-entropy (0: off; 0.1 is common).")
    patience: int | None = _opt(None, "Stop after this many epochs without a better validation accuracy (default: never).")
    device: str = _opt("auto", "auto, cpu, cuda or mps.")
    unfreeze_stages: int = _opt(1, "Backbone stages unfrozen by partial fine-tuning.")
    val_fraction: float = _opt(0.2, "Validation share when the data has no val/ folder.")
    num_workers: int | None = _opt(None, "Image-decoding processes (default: cores - 1).")
    feature_cache: bool = _opt(True, "With a frozen backbone, compute its features once and train the head on them.")
    augment: bool = _opt(True, "Random resized crop and flip while fine-tuning (cached features use centre crops).")
    backend: str = _opt("auto", "Inference backend of frozen features: auto (OpenVINO on CPU when installed and worth it), "
                                "torch or openvino.")
    precision: str = _opt("auto", "auto (frozen features in bf16 only within cosine 0.999 of fp32; fine-tuning with bf16 "
                                  "autocast where the hardware computes it natively), fp32 or bf16.")
    tracker: str = _opt("none", "Experiment tracker: none, tensorboard or mlflow (the extra: pip install "
                                "'transferkit[tensorboard]' or '[mlflow]'); logs parameters, epochs, learning rates, the "
                                "confusion matrix and the model.")
    tracker_uri: str | None = _opt(None, "mlflow: a tracking URI (default sqlite:///<the run folder's parent>/mlruns.db); "
                                         "tensorboard: a folder for many runs' logs (default <run>/tensorboard).")
    experiment: str = _opt("transferkit", "The tracker's experiment name (tensorboard: a sub-folder of `tracker_uri`).")

    def __post_init__(self) -> None:
        self.data = os.fspath(self.data)
        self.weights = os.fspath(self.weights)
        if isinstance(self.input_size, str) and self.input_size.strip().isdigit():
            self.input_size = int(self.input_size)  # the command line's text
        self.validate()

    @classmethod
    def from_options(cls, data: str | os.PathLike | None = None, *, config: TrainConfig | None = None,
                     **options: Any) -> TrainConfig:
        """``config`` (or the defaults) with ``data`` and ``options`` replacing its fields.

        Raises:
            ConfigError: an unknown option (with close matches) or a bad value.
        """
        names = [f.name for f in dataclasses.fields(cls)]
        unknown = [k for k in options if k not in names or k == "data"]
        if unknown:
            raise ConfigError(f"Unknown training option `{unknown[0]}`.{close_matches(unknown[0], names)} "
                              f"Options: {', '.join(n for n in names if n != 'data')}.")
        if data is not None:
            options["data"] = data
        return dataclasses.replace(config, **options) if config is not None else cls(**options)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def validate(self) -> None:
        """Raises ConfigError (UnknownNameError for names) for a bad value."""
        for name, kind in (("epochs", int), ("batch_size", int), ("head_lr", float), ("backbone_lr", float)):
            _positive(name, getattr(self, name), kind)
        _positive("unfreeze_stages", self.unfreeze_stages, int)
        if self.head_init not in HEAD_INITS:
            raise unknown_name("head_init", self.head_init, HEAD_INITS)
        head_l2_value(self.head_l2)
        if self.optimizer not in OPTIMIZERS:
            raise unknown_name("optimizer", self.optimizer, OPTIMIZERS)
        if self.scheduler not in SCHEDULERS:
            raise unknown_name("scheduler", self.scheduler, SCHEDULERS)
        if self.lr is not None and self.lr != "auto":
            raise ConfigError(f"`lr` must be 'auto' (run the LR finder) or None (use head_lr); got {self.lr!r}. "
                              "Set a learning rate with head_lr.")
        if self.layer_decay is not None:
            _positive("layer_decay", self.layer_decay, float)
            if self.layer_decay > 1:
                raise ConfigError(f"`layer_decay` must be in (0, 1] (earlier stages learn slower); got {self.layer_decay!r}.")
        if not _is_int(self.frozen_epochs) or self.frozen_epochs < 0:
            raise ConfigError(f"`frozen_epochs` must be an int >= 0; got {self.frozen_epochs!r}.")
        if self.auto_augment not in AUTO_AUGMENTS:
            raise unknown_name("auto_augment", self.auto_augment, AUTO_AUGMENTS)
        for name in ("mixup", "cutmix", "label_smoothing"):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or isinstance(value, bool) or value < 0 or (name == "label_smoothing"
                                                                                              and value >= 1):
                raise ConfigError(f"`{name}` must be a number >= 0{' and < 1' if name == 'label_smoothing' else ''}; "
                                  f"got {value!r}.")
        if not isinstance(self.ema, (int, float)) or isinstance(self.ema, bool) or not 0 <= self.ema < 1:
            raise ConfigError(f"`ema` must be a decay in [0, 1) (0: off; 0.999 is common); got {self.ema!r}.")
        if self.input_size != "auto" and (not _is_int(self.input_size) or not 16 <= self.input_size <= 2048):
            raise ConfigError(f"`input_size` must be 'auto' or a side in px from 16 to 2048; got {self.input_size!r}.")
        if self.patience is not None and (not _is_int(self.patience) or self.patience < 1):
            raise ConfigError(f"`patience` must be an int >= 1 (or None to disable early stopping); got {self.patience!r}.")
        if self.num_workers is not None and (not _is_int(self.num_workers) or self.num_workers < 0):
            raise ConfigError(f"`num_workers` must be an int >= 0 (or None for cores - 1); got {self.num_workers!r}.")
        if not isinstance(self.weight_decay, (int, float)) or isinstance(self.weight_decay, bool) or self.weight_decay < 0:
            raise ConfigError(f"`weight_decay` must be >= 0; got {self.weight_decay!r}.")
        from ..inference.policy import validate as validate_inference

        validate_inference(self.backend, self.precision)
        from ..tracking import validate_tracker

        validate_tracker(self.tracker, self.tracker_uri, self.experiment)
        if self.strategy != "auto":
            from ..strategies import strategy_class

            strategy_class(self.strategy)  # an unknown name fails here, before any work


TrainConfig.__doc__ = (TrainConfig.__doc__ or "") + "\n\n    Attributes:\n" + "".join(
    f"        {f.name}: {f.metadata['doc']}\n" for f in dataclasses.fields(TrainConfig))


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _positive(name: str, value, kind: type) -> None:
    ok = _is_int(value) if kind is int else isinstance(value, (int, float)) and not isinstance(value, bool)
    if not ok or value <= 0:
        raise ConfigError(f"`{name}` must be a positive {kind.__name__}; got {value!r}.")


def head_l2_value(value) -> float | str:
    """``"auto"``, or the number ``value`` names (a float, or its text from the command line).

    Raises:
        ConfigError: anything else, or a negative number.
    """
    if value == "auto":
        return "auto"
    try:
        number = float(value) if not isinstance(value, bool) else None
    except (TypeError, ValueError):
        number = None
    if number is None or not number >= 0:
        raise ConfigError(f"`head_l2` must be a non-negative number or 'auto'; got {value!r}.")
    return number


def option_docs() -> dict[str, str]:
    """Each training option's one-line documentation, by field name."""
    return {f.name: f.metadata.get("doc", "") for f in dataclasses.fields(TrainConfig)}
