"""Records that describe a backbone's weights and the preprocessing they expect."""

from __future__ import annotations

import functools
import math
from dataclasses import asdict, dataclass, field
from typing import Any

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

_INTERPOLATIONS = ("nearest", "bilinear", "bicubic")


@dataclass(frozen=True)
class Preprocessing:
    """How images must be prepared for a set of weights.

    The record travels with the weights: training, evaluation, prediction and embedding
    all derive their transforms from it, and it is saved with every trained model, so the
    preprocessing can never drift from the weights.

    Attributes:
        input_size: side of the square crop the network sees.
        resize_size: the shorter side is resized to this before the centre crop.
        interpolation: ``"bilinear"``, ``"bicubic"`` or ``"nearest"``.
        mean: per-channel mean subtracted after scaling to [0, 1].
        std: per-channel standard deviation divided by.
    """

    input_size: int = 224
    resize_size: int = 256
    interpolation: str = "bilinear"
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD

    def __post_init__(self) -> None:
        if self.interpolation not in _INTERPOLATIONS:
            raise ValueError(f"interpolation must be one of {_INTERPOLATIONS}; got {self.interpolation!r}")
        if self.resize_size < self.input_size:
            raise ValueError("resize_size must be >= input_size")

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["mean"] = list(self.mean)
        d["std"] = list(self.std)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Preprocessing:
        return cls(
            input_size=int(d["input_size"]),
            resize_size=int(d["resize_size"]),
            interpolation=str(d["interpolation"]),
            mean=tuple(float(x) for x in d["mean"]),  # type: ignore[arg-type]
            std=tuple(float(x) for x in d["std"]),  # type: ignore[arg-type]
        )

    def at_size(self, size: int) -> Preprocessing:
        """This preprocessing for another input size, the resize scaled alike (resize/crop ratio kept)."""
        if size == self.input_size:
            return self
        return Preprocessing(input_size=size, resize_size=math.ceil(size * self.resize_size / self.input_size),
                             interpolation=self.interpolation, mean=self.mean, std=self.std)

    def eval_transform(self):
        """Resize, centre crop, to tensor, normalise (torchvision transform)."""
        from torchvision import transforms as T

        return T.Compose(
            [
                T.Resize(self.resize_size, interpolation=_interp(self.interpolation), antialias=True),
                T.CenterCrop(self.input_size),
                T.ToTensor(),
                T.Normalize(self.mean, self.std),
            ]
        )

    def resize_crop_transform(self, *, exact: bool = False):
        """The resize and centre crop of :meth:`eval_transform`, from a PIL image to a uint8 ``(H, W, 3)`` array.

        Decoding threads run this; :meth:`normalize_nhwc` (or the OpenVINO graph, which does
        the same arithmetic) then finishes a whole batch at once. Output sizes and crop
        offsets are torchvision's. The image may also be a uint8 ``(H, W, 4)`` RGBX array (as
        :func:`transferkit.data.decode_jpeg_rgbx` returns), which gives the same pixels as the
        PIL image of the same RGB values.

        Args:
            exact: resize with PIL, as :meth:`eval_transform` does (bit-identical pixels).
                By default bilinear and bicubic resizing uses PyTorch's antialiased uint8
                kernel instead: 3.5x faster than PIL's bicubic and within 2 grey levels of it
                per pixel (embeddings at cosine >= 0.99997 to the exact path; BENCHMARKS.md, target 1).
        """
        import numpy as np
        from PIL import Image

        resample = {"nearest": Image.NEAREST, "bilinear": Image.BILINEAR, "bicubic": Image.BICUBIC}[self.interpolation]
        size, crop, mode = self.resize_size, self.input_size, self.interpolation
        use_torch = not exact and mode in ("bilinear", "bicubic")
        if use_torch:
            _allow_readonly_arrays()

        def transform(im):
            if isinstance(im, np.ndarray) and not use_torch:  # RGBX pixels for PIL's resize
                im = Image.fromarray(np.ascontiguousarray(im[:, :, :3]), "RGB")
            w, h = (im.shape[1], im.shape[0]) if isinstance(im, np.ndarray) else im.size
            # torchvision's Resize(int): the shorter side becomes `size`, the longer int(size * long / short)
            nw, nh = (size, int(size * h / w)) if w <= h else (int(size * w / h), size)
            if nw < crop or nh < crop:  # torchvision pads before cropping; cannot happen for resize_size >= input_size
                raise ValueError(f"resized image {nw}x{nh} is smaller than the {crop}px crop")
            left, top = int(round((nw - crop) / 2.0)), int(round((nh - crop) / 2.0))
            if use_torch and (nw, nh) != (w, h):
                return _torch_resize_crop(im, (nh, nw), (top, left, crop), mode)
            if isinstance(im, np.ndarray):  # already at the resize size: crop only
                return im[top:top + crop, left:left + crop, :3]
            if (nw, nh) != (w, h):
                # a greyscale ("L") image is resized in its one channel and repeated into three
                # afterwards: the same pixels as converting to RGB first, a third of the work
                im = im.resize((nw, nh), resample)
            arr = np.asarray(im.crop((left, top, left + crop, top + crop)), dtype=np.uint8)
            if arr.ndim == 2:
                arr = np.repeat(arr[:, :, None], 3, axis=2)
            return arr

        return transform

    def normalize_nhwc(self, x, device=None):
        """uint8 ``(B, H, W, 3)`` (array or tensor) from :meth:`resize_crop_transform` -> normalised float32 ``(B, 3, H, W)``.

        With a CUDA ``device`` the uint8 batch is copied there from pinned memory (a quarter of
        the bytes of the float batch) and normalised on the GPU. The result is a channels-last
        view (the layout the convolutions want), with the same values as ``ToTensor`` + ``Normalize``.
        """
        import numpy as np
        import torch

        if isinstance(x, np.ndarray) and not x.flags.writeable:
            x = x.copy()
        x = torch.as_tensor(x)
        if device is not None and torch.device(device).type == "cuda":
            x = x.pin_memory().to(device, non_blocking=True)
        mean = torch.tensor(self.mean, dtype=torch.float32, device=x.device).view(1, 3, 1, 1) * 255.0
        std = torch.tensor(self.std, dtype=torch.float32, device=x.device).view(1, 3, 1, 1) * 255.0
        return (x.permute(0, 3, 1, 2).float() - mean) / std

    def train_transform(self):
        """Random resized crop and horizontal flip, then to tensor and normalise."""
        from torchvision import transforms as T

        return T.Compose(
            [
                T.RandomResizedCrop(self.input_size, interpolation=_interp(self.interpolation), antialias=True),
                T.RandomHorizontalFlip(),
                T.ToTensor(),
                T.Normalize(self.mean, self.std),
            ]
        )


def _torch_resize_crop(im, out_hw: tuple[int, int], crop: tuple[int, int, int], mode: str):
    """Antialiased uint8 resize with PyTorch's vectorised kernel, then the centre crop, as a uint8 ``(H, W, 3)`` view.

    An RGB image's pixels are read in PIL's own memory (:func:`_rgbx_view`; a packed copy
    where that is not possible), and the crop is returned as a view: the batch collation makes
    the one copy (two extra copies cost a third more time per photo).
    """
    import numpy as np
    import torch
    import torch.nn.functional as F

    if isinstance(im, np.ndarray):  # RGBX from decode_jpeg_rgbx: the 4-channel layout _rgbx_view reads from PIL
        arr = im
    elif im.mode != "RGB":  # greyscale: the 3-channel kernel is 1.6x faster than the 1-channel one
        arr = np.repeat(np.asarray(im)[:, :, None], 3, axis=2)
    elif (arr := _rgbx_view(im)) is None:
        arr = np.frombuffer(im.tobytes(), dtype=np.uint8).reshape(im.size[1], im.size[0], 3)  # read-only; never written
    x = torch.from_numpy(arr).permute(2, 0, 1).unsqueeze(0)  # channels-last view: what the fast kernel wants
    y = F.interpolate(x, size=out_hw, mode=mode, antialias=True)
    top, left, side = crop
    return y[0, :3, top:top + side, left:left + side].permute(1, 2, 0).numpy()


def _rgbx_view(im):
    """PIL's own pixel memory of an RGB image (4 bytes per pixel, RGB + padding) as a read-only
    uint8 ``(H, W, 4)`` array, or None where Pillow cannot export it (a Pillow without Arrow
    export; an image stored in several blocks, e.g. 6000x4000).

    The resize kernel works on 4 channels anyway, and each channel is resized on its own, so
    the first three channels equal the resize of the RGB bytes; this skips ``tobytes``
    (packing to RGB, ~0.2 ms per photo) and the kernel's repacking to 4 channels.
    """
    if not hasattr(im, "__arrow_c_array__"):
        return None
    try:
        import pyarrow as pa

        flat = pa.array(im).values.to_numpy(zero_copy_only=True)
    except Exception:  # noqa: BLE001 - not exportable as one block: the caller copies
        return None
    w, h = im.size
    return flat.reshape(h, w, 4) if flat.size == w * h * 4 else None


@functools.cache
def _allow_readonly_arrays() -> None:
    """Spend PyTorch's once-per-process warning about read-only arrays here, silently.

    ``torch.from_numpy`` warns (once) that a read-only array could be written through the
    tensor; the decoders hand it PIL's immutable bytes, which the resize only reads.
    """
    import warnings

    import numpy as np
    import torch

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        torch.from_numpy(np.frombuffer(b"\0", dtype=np.uint8))


def _interp(name: str):
    from torchvision.transforms import InterpolationMode

    return {
        "nearest": InterpolationMode.NEAREST,
        "bilinear": InterpolationMode.BILINEAR,
        "bicubic": InterpolationMode.BICUBIC,
    }[name]


@dataclass(frozen=True)
class WeightsInfo:
    """Where a backbone's pretrained weights come from.

    Attributes:
        tag: short identifier stored in run metadata (``"IMAGENET1K_V1"``).
        source: one line for humans: who publishes the weights and how they are fetched.
        location: where the weights file is looked for on this machine.
        preprocessing: what the weights expect.
    """

    tag: str
    source: str
    location: str
    preprocessing: Preprocessing = field(default_factory=Preprocessing)
