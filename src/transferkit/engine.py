"""Low-level loops shared by training, evaluation and prediction: devices, loaders, feature passes."""

from __future__ import annotations

import time
from contextlib import nullcontext
from dataclasses import dataclass

import torch
from torch.utils.data import DataLoader

from .data import ImageDataset, ImageSet, collate_skip, default_num_workers
from .errors import ConfigError


def resolve_device(device: str = "auto") -> torch.device:
    """``auto`` -> CUDA if available, then MPS, else CPU.

    Raises:
        ConfigError: an unknown device, or one that is not available.
    """
    d = str(device).lower()
    if d == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if d.startswith("cuda"):
        if not torch.cuda.is_available():
            raise ConfigError(f"--device {device}: CUDA is not available on this machine. Use --device cpu or auto.")
        return torch.device(d)
    if d == "mps":
        if not (getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available()):
            raise ConfigError("--device mps: MPS is not available on this machine. Use --device cpu or auto.")
        return torch.device("mps")
    if d == "cpu":
        return torch.device("cpu")
    raise ConfigError(f"Unknown device {device!r}. Choose from: auto, cpu, cuda, mps.")


def autocast_for(device: torch.device, *, enabled: bool = True):
    """Mixed precision where it is safe and fast: fp16/bf16 autocast on CUDA, none elsewhere."""
    if enabled and device.type == "cuda":
        dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return torch.autocast("cuda", dtype=dtype)
    return nullcontext()


def training_autocast_dtype(device: torch.device, precision: str = "auto", model: torch.nn.Module | None = None) -> torch.dtype | None:
    """The autocast dtype for fine-tuning, or None for plain fp32.

    ``auto``: bf16 on CUDA devices that support it (fp16 otherwise, with a grad scaler). On
    CPUs with native bf16 (AVX512-BF16/AMX), bf16 unless ``model`` trains most of its
    depthwise convolutions, whose bf16 backward pass is slow there. Measured on 2 Sapphire
    Rapids cores: ResNet-18 full and partial ~2.2x with bf16 (one-step microbenchmark);
    EfficientNet-Lite0 training-phase images/s (`transferkit train`, 2 epochs) partial 64-66
    with bf16 against 31-41 in fp32, but full 11.9-14.0 with bf16 against 13.6-16.0 in fp32
    (channels-last). Elsewhere fp32. Weights, optimizer state and the
    loss stay in fp32 (mixed precision).
    """
    from .accel import cpu_has_bf16

    if precision == "fp32":
        return None
    if device.type == "cuda":
        return torch.bfloat16 if (precision == "bf16" or torch.cuda.is_bf16_supported()) else torch.float16
    if device.type == "cpu" and precision == "bf16":
        return torch.bfloat16
    if device.type == "cpu" and cpu_has_bf16():
        return None if model is not None and trains_depthwise(model) else torch.bfloat16
    return None


def trains_depthwise(model: torch.nn.Module, share: float = 0.5) -> bool:
    """Whether more than ``share`` of the model's depthwise convolutions have trainable weights."""
    depthwise = [m for m in model.modules()
                 if isinstance(m, torch.nn.Conv2d) and m.groups > 1 and m.groups == m.in_channels]
    if not depthwise:
        return False
    trainable = sum(1 for m in depthwise if m.weight.requires_grad)
    return trainable > share * len(depthwise)


def make_loader(images: ImageSet, transform, *, batch_size: int, device: torch.device, num_workers: int | None = None,
                batch_sampler=None, draft_size: int | None = None) -> DataLoader:
    """A DataLoader that decodes in worker processes and skips unreadable images."""
    workers = default_num_workers() if num_workers is None else int(num_workers)
    ds = ImageDataset(images, transform, draft_size=draft_size)
    kwargs = dict(num_workers=workers, collate_fn=collate_skip, pin_memory=device.type == "cuda")
    if workers > 0:
        kwargs["persistent_workers"] = False
        kwargs["prefetch_factor"] = 4
    if batch_sampler is not None:
        return DataLoader(ds, batch_sampler=batch_sampler, **kwargs)
    return DataLoader(ds, batch_size=batch_size, shuffle=False, **kwargs)


@dataclass
class FeatureBatch:
    features: torch.Tensor
    labels: torch.Tensor
    indices: torch.Tensor
    skipped: dict[int, str]
    seconds: float


class _Uint8Images:
    """Items ``(uint8 HWC array | None, index, None, reason)`` for :func:`~transferkit.data.prefetch_batches`."""

    def __init__(self, images: ImageSet, pre):
        self.images = images
        # exact (PIL) resizing: cached training features equal those of the uncached path
        self.transform = pre.resize_crop_transform(exact=True)
        self.draft = pre.resize_size

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int):
        from .data import UnreadableImageError, load_image

        try:
            im = load_image(self.images.paths[i], draft_size=self.draft, keep_gray=True)
            return self.transform(im), i, None, None
        except UnreadableImageError as exc:
            return None, i, None, str(exc)
        except Exception as exc:  # noqa: BLE001 - e.g. a transform failing on a degenerate image
            return None, i, None, f"{type(exc).__name__}: {exc}"[:200]


def compute_features(backbone, images: ImageSet, *, batch_size: int = 64, device: torch.device, num_workers: int | None = None,
                     progress=None, description: str = "features", runner=None, backend: str = "auto",
                     precision: str = "auto") -> FeatureBatch:
    """Run a frozen backbone once over ``images`` (eval transforms) and keep the features on the CPU.

    Images are decoded by threads (one per core by default) a few batches ahead of the
    model, as uint8, and normalised per batch. ``runner`` (an
    :class:`~transferkit.accel.InferenceRunner`) is built from ``backend`` and ``precision``
    when not given; pass one to reuse its conversion across calls.
    """

    from .accel import InferenceRunner
    from .data import decode_threads, prefetch_batches

    backbone.eval()
    pre = backbone.preprocessing
    if runner is None:
        runner = InferenceRunner(backbone, input_size=pre.input_size, device=device, backend=backend, precision=precision,
                                 expected_items=len(images), preprocessing=pre)
    elif runner.preprocessing is None:
        runner.preprocessing = pre
    threads = decode_threads() if num_workers is None else int(num_workers)
    feats, labels, idxs = [], [], []
    skipped: dict[int, str] = {}
    start = time.perf_counter()
    task = progress.add_task(description, total=len(images)) if progress is not None else None
    batches = ((x, (idx, bad)) for x, idx, _info, bad in prefetch_batches(_Uint8Images(images, pre), batch_size, threads))
    for y, (idx, bad) in runner.map_uint8(batches):
        for i, reason in bad:
            skipped[int(i)] = reason
        if y is not None:
            feats.append(y.float().cpu())
            labels.append(torch.tensor([images.labels[i] for i in idx], dtype=torch.long))
            idxs.append(torch.tensor(idx, dtype=torch.long))
        if task is not None:
            progress.advance(task, len(idx) + len(bad))
    if task is not None:
        progress.remove_task(task)
    if feats:
        return FeatureBatch(torch.cat(feats), torch.cat(labels), torch.cat(idxs), skipped, time.perf_counter() - start)
    empty = torch.empty(0, backbone.num_features)
    return FeatureBatch(empty, torch.empty(0, dtype=torch.long), torch.empty(0, dtype=torch.long), skipped,
                        time.perf_counter() - start)
