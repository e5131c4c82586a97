"""Embedding extraction: read -> encode -> write, streaming, resumable and incremental.

* :class:`FeatureExtractor` is the spec's extractor (any classifier minus its last layer).
* :class:`Extractor` adds what a store needs: the preprocessing that belongs to the
  weights, a ``model_id`` that identifies model + weights + preprocessing, and batched
  embedding of files (decoding in background threads, a few batches ahead).
* :func:`embed_folder` mirrors an image folder into an :class:`~transferkit.store.EmbeddingStore`:
  only new or changed files are embedded, deleted files are dropped, and every chunk is
  committed as it is produced, so a killed run is completed by running it again.
"""

from __future__ import annotations

import hashlib
import io
import logging
import os
import re
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ..backbones import Preprocessing
from ..data.images import (
    UnreadableImageError,
    decode_jpeg_rgbx,
    decode_threads,
    is_image_file,
    list_images,
    load_image,
    max_pixels_limit,
    prefetch_batches,
)
from ..errors import ConfigError, DataError, DataNotFoundError
from ..store.store import EmbeddingStore, normalize

log = logging.getLogger("transferkit")

_SPLIT_NAMES = ("train", "training", "val", "valid", "validation", "test", "testing")


def _default_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def _trunk(model: nn.Module) -> tuple[nn.Module, Preprocessing | None]:
    """The feature part of ``model`` and its preprocessing, if it carries one."""
    from ..backbones._module import FeatureBackbone
    from ..training.model import TransferModel

    if isinstance(model, TransferModel):
        return model.backbone, model.backbone.preprocessing
    if isinstance(model, FeatureBackbone):
        return model, model.preprocessing
    # A plain classifier (e.g. torchvision resnet18): drop the last layer, as in the spec.
    children = list(model.children())
    if len(children) < 2:
        raise ConfigError(f"Cannot make a feature extractor from {type(model).__name__}: it has no classifier layer to remove. "
                          f"Pass a torchvision classifier, a TransferModel or a backbone from create_backbone().")
    return nn.Sequential(*children[:-1]), None


class FeatureExtractor:
    """Embeddings from a model with its classifier removed (the spec's API).

    Args:
        model: a :class:`~transferkit.model.TransferModel` (its backbone is used), a
            :class:`FeatureBackbone`, or a plain classifier such as ``torchvision.models.resnet18()``
            (all children but the last, then flattened).
    """

    def __init__(self, model: nn.Module):
        self.features, pre = _trunk(model)
        self.features.eval()
        self.preprocessing = pre or Preprocessing()

    def extract(self, image: torch.Tensor) -> np.ndarray:
        """Embed a ``(B, 3, H, W)`` (or ``(3, H, W)``) tensor; returns float32 ``(B, D)``, not normalised."""
        if image.ndim == 3:
            image = image.unsqueeze(0)
        if image.ndim != 4:
            raise ConfigError(f"extract() expects a (B, 3, H, W) image tensor; got shape {tuple(image.shape)}.")
        param = next(self.features.parameters(), None)
        if param is not None:
            image = image.to(param.device)
        with torch.inference_mode():
            emb = self.features(image)
            emb = emb.reshape(emb.size(0), -1)
        return emb.float().cpu().numpy()

    def extract_paths(self, paths: Sequence[str | os.PathLike], *, batch_size: int = 64) -> np.ndarray:
        """Embed image files with the model's preprocessing; raises on an unreadable file.

        Returns:
            float32 ``(N, D)``, not normalised.

        Raises:
            DataError: a file cannot be read.
        """
        transform = self.preprocessing.eval_transform()
        out = []
        for start in range(0, len(paths), batch_size):
            batch = []
            for p in paths[start:start + batch_size]:
                try:
                    batch.append(transform(load_image(p, draft_size=self.preprocessing.resize_size)))
                except UnreadableImageError as exc:
                    raise DataError(f"Cannot read image {p}: {exc}. Remove or replace the file.") from None
            out.append(self.extract(torch.stack(batch)))
        return np.concatenate(out) if out else np.zeros((0, 0), dtype=np.float32)


class Extractor:
    """Batched, normalised image embeddings with a record of which model made them.

    Build with :meth:`from_backbone`, :meth:`from_run` or :meth:`from_model`.

    Args:
        module: maps ``(B, 3, H, W)`` to ``(B, D)`` (or anything that flattens to it); or a
            zero-argument callable that builds it, called only when the module is needed
            (with ``weights_key`` naming a cached OpenVINO conversion, it never is).
        preprocessing: the preprocessing the weights expect.
        model_id: identifies model, weights and preprocessing (stored in the store).
        source: how to rebuild the model (``{"run": DIR}`` or ``{"backbone": NAME, "weights": W}``).
        device: ``"cpu"``, ``"cuda"``, ... (default: CUDA if available).
        channels_last: use the channels-last memory format (faster convolutions on CPU and
            GPU; results differ from contiguous fp32 only by float rounding). ``False`` with
            ``backend="torch", precision="fp32"`` is the exact eager reference.
        backend: ``"auto"`` (default: OpenVINO on the CPU for large jobs, else PyTorch; see
            :class:`~transferkit.accel.InferenceRunner`), ``"torch"`` or ``"openvino"``.
        precision: ``"auto"`` (default: bf16 only if, on the first batch, every embedding keeps
            cosine >= 0.999 to fp32), ``"fp32"`` or ``"bf16"``.
        exact_resize: decode files with PIL's resize, exactly as the weights' torchvision
            transform does. Default ``False``: PyTorch's vectorised uint8 resize, 3.5x faster
            for bicubic and within 2 grey levels per pixel (EfficientNet-Lite0 embeddings of
            3,157 photos at cosine >= 0.99997 to the exact path).
        weights_key: identifies the weights in the conversion cache
            (:func:`~transferkit.accel.model_key`); default: a hash of the module's state_dict.
        bf16_safe: False for a model known to fail the bf16 fidelity bar: ``precision="auto"``
            then runs fp32 without trying bf16. Default: the registry entry
            (``BackboneSpec.bf16_safe``) of the backbone named in ``model_id``.
    """

    def __init__(self, module: nn.Module | Callable[[], nn.Module], *, preprocessing: Preprocessing, model_id: dict[str, Any],
                 source: dict[str, Any] | None = None, device: str | torch.device | None = None,
                 channels_last: bool = True, precision: str = "auto", backend: str = "auto", exact_resize: bool = False,
                 weights_key: str | None = None, bf16_safe: bool | None = None):
        from ..inference.runner import BACKENDS, PRECISIONS

        if precision not in PRECISIONS:
            raise ConfigError(f"precision must be one of {', '.join(PRECISIONS)}; got {precision!r}.")
        if backend not in BACKENDS:
            raise ConfigError(f"backend must be one of {', '.join(BACKENDS)}; got {backend!r}.")
        self.backend = backend
        self.exact_resize = bool(exact_resize)
        self._runner = None
        self._expected_items: int | None = None
        self.device = torch.device(device) if device is not None else _default_device()
        self.channels_last = channels_last
        self.precision = precision
        self.weights_key = weights_key
        self._bf16_safe = bf16_safe
        self._module: nn.Module | None = None
        self._build = None
        if isinstance(module, nn.Module):
            self._module = self._prepare(module)
        else:
            self._build = module
        self.preprocessing = preprocessing
        self.model_id = dict(model_id)
        self.source = dict(source or {})

    def _prepare(self, module: nn.Module) -> nn.Module:
        module = module.eval().to(self.device)
        return module.to(memory_format=torch.channels_last) if self.channels_last else module

    @property
    def module(self) -> nn.Module:
        """The PyTorch module (built on first use when the extractor was given a builder)."""
        if self._module is None:
            self._module = self._prepare(self._build())
        return self._module

    @property
    def bf16_safe(self) -> bool:
        """Whether ``precision="auto"`` may try bf16 (see the ``bf16_safe`` argument)."""
        if self._bf16_safe is not None:
            return bool(self._bf16_safe)
        from ..backbones import backbone_bf16_safe

        return backbone_bf16_safe(str(self.model_id.get("backbone", "")))

    @property
    def dim(self) -> int:
        return int(self.model_id["dim"])

    # -------------------------------------------------------------- constructors
    @classmethod
    def from_backbone(cls, name: str, *, weights: str | os.PathLike = "default", **kwargs) -> Extractor:
        """Extractor from a registered backbone (``weights``: ``"default"``, ``"none"`` or a file).

        When the weights are a file on disk (the default weights once downloaded or bundled,
        or ``weights=FILE``) whose OpenVINO conversion is cached, the PyTorch module is built
        only if something needs it.

        Raises:
            UnknownNameError, WeightsUnavailableError, DataNotFoundError, ConfigError: see ``create_backbone``.
        """
        from ..backbones import create_backbone, get_backbone_spec
        from ..inference.runner import cached_model_info, model_key

        weights_arg = str(weights)
        spec = get_backbone_spec(name)
        digest = None  # recorded in the model_id for a weights file
        key = None
        if weights_arg == "default" and os.path.isfile(spec.weights.location):
            key = model_key(spec.name, file_digest(Path(spec.weights.location)), spec.weights.preprocessing.input_size)
        elif weights_arg not in ("default", "none") and Path(weights_arg).is_file():
            digest = file_digest(Path(weights_arg))
            key = model_key(spec.name, digest, spec.weights.preprocessing.input_size)
        if weights_arg not in ("default", "none"):
            tag = f"file:{Path(weights_arg).name}"
            weights_arg = str(Path(weights_arg).resolve())
        source = {"backbone": spec.name, "weights": weights_arg}
        cached = cached_model_info(key) if key else None
        if cached is not None:
            pre = spec.weights.preprocessing
            model_id = _model_id(spec.name, spec.weights.tag if weights_arg == "default" else tag, pre, cached["dim"], digest)
            return cls(lambda: create_backbone(name, weights=weights_arg), preprocessing=pre, model_id=model_id,
                       source=source, weights_key=key, **kwargs)
        backbone = create_backbone(name, weights=weights_arg)
        model_id = _model_id(backbone.name, backbone.weights_tag, backbone.preprocessing, backbone.num_features, digest)
        return cls(backbone, preprocessing=backbone.preprocessing, model_id=model_id, source=source, weights_key=key, **kwargs)

    @classmethod
    def from_run(cls, run_dir: str | os.PathLike, **kwargs) -> Extractor:
        """Extractor from the backbone of a trained run (``transferkit train --out RUN``).

        Raises:
            RunError: not a run, or corrupt.
        """
        from ..inference.runner import cached_model_info, model_key
        from ..training.model import load_model, read_model_meta

        run_dir = Path(run_dir)
        meta = read_model_meta(run_dir)
        weights_file = run_dir / "model.safetensors"
        digest = file_digest(weights_file) if weights_file.is_file() else None
        pre = Preprocessing.from_dict(meta["preprocessing"])
        key = model_key("run-backbone", digest, pre.input_size) if digest else None
        cached = cached_model_info(key) if key else None
        source = {"run": str(run_dir.resolve())}
        if cached is not None:
            model_id = _model_id(meta["backbone"], str(meta.get("weights", "unknown")), pre, cached["dim"], digest)
            model_id["run_dir"] = str(run_dir.resolve())
            return cls(lambda: load_model(run_dir)[0].backbone, preprocessing=pre, model_id=model_id, source=source,
                       weights_key=key, **kwargs)
        model, meta = load_model(run_dir)
        backbone = model.backbone
        model_id = _model_id(backbone.name, str(meta.get("weights", backbone.weights_tag)), backbone.preprocessing,
                             backbone.num_features, digest or file_digest(weights_file))
        model_id["run_dir"] = str(run_dir.resolve())
        return cls(backbone, preprocessing=backbone.preprocessing, model_id=model_id, source=source, weights_key=key, **kwargs)

    @classmethod
    def from_model(cls, model: nn.Module, *, name: str | None = None, **kwargs) -> Extractor:
        """Extractor from any model :class:`FeatureExtractor` accepts (identity from its class and weights hash)."""
        from ..backbones import backbone_bf16_safe

        trunk, pre = _trunk(model)
        pre = pre or Preprocessing()
        with torch.inference_mode():
            was = trunk.training
            trunk.eval()
            dim = int(trunk(torch.zeros(1, 3, pre.input_size, pre.input_size)).reshape(1, -1).shape[1])
            trunk.train(was)
        h = hashlib.blake2b(digest_size=16)
        for k, v in sorted(trunk.state_dict().items()):
            h.update(k.encode())
            h.update(v.detach().cpu().contiguous().numpy().tobytes())
        tag = getattr(trunk, "weights_tag", "in-memory")
        # the trunk's own registry name: ``name`` may relabel it in the model_id
        kwargs.setdefault("bf16_safe", backbone_bf16_safe(str(getattr(trunk, "name", ""))))
        model_id = _model_id(name or getattr(trunk, "name", type(model).__name__), tag, pre, dim, h.hexdigest())
        return cls(trunk, preprocessing=pre, model_id=model_id, source={}, **kwargs)

    @classmethod
    def from_source(cls, source: dict[str, Any], **kwargs) -> Extractor:
        """Rebuild the extractor recorded in a store's metadata ``source``.

        Raises:
            ConfigError: the store does not record a rebuildable model.
        """
        if source.get("run"):
            return cls.from_run(source["run"], **kwargs)
        if source.get("backbone"):
            return cls.from_backbone(source["backbone"], weights=source.get("weights", "default"), **kwargs)
        raise ConfigError("This store does not record how to rebuild its model, so it cannot embed a query image. "
                          "Search with --id ID, or re-embed with `transferkit embed --model NAME`.")

    # -------------------------------------------------------------- embedding
    @property
    def inference_info(self) -> dict[str, Any]:
        """Backend and precision actually used (after the first batch), with the fidelity check."""
        if self._runner is not None:
            return dict(self._runner.info)
        return {"backend": "torch", "precision": self.precision}

    def _uses_runner(self) -> bool:
        return self.backend != "torch" or self.precision == "auto"

    def _get_runner(self):
        from ..inference.runner import InferenceRunner

        if self._runner is None:
            module = self._module if self._module is not None else (lambda: self.module)
            self._runner = InferenceRunner(module, input_size=self.preprocessing.input_size, device=self.device,
                                           backend=self.backend, precision=self.precision, expected_items=self._expected_items,
                                           preprocessing=self.preprocessing, weights_key=self.weights_key,
                                           bf16_safe=self.bf16_safe)
        return self._runner

    def _forward(self, x: torch.Tensor) -> torch.Tensor:
        if self._uses_runner():
            y = self._get_runner()(x)
            return y.reshape(y.shape[0], -1).float()
        x = x.to(self.device, non_blocking=True)
        x = x.contiguous(memory_format=torch.channels_last if self.channels_last else torch.contiguous_format)
        with torch.inference_mode():
            if self.precision == "bf16":
                with torch.autocast(device_type=self.device.type, dtype=torch.bfloat16):
                    y = self.module(x)
            else:
                y = self.module(x)
            return y.reshape(y.shape[0], -1).float()

    def embed_tensors(self, x: torch.Tensor) -> np.ndarray:
        """Raw (not normalised) float32 ``(B, D)`` embeddings of preprocessed images."""
        return self._forward(x).cpu().numpy()

    def embed_images(self, images: Sequence[Any]) -> np.ndarray:
        """L2-normalised float32 ``(N, D)`` embeddings of PIL images."""
        transform = self.preprocessing.eval_transform()
        if not images:
            return np.zeros((0, self.dim), dtype=np.float32)
        x = torch.stack([transform(im.convert("RGB")) for im in images])
        return normalize(self.embed_tensors(x))

    def iter_files(self, paths: Sequence[str | os.PathLike], *, batch_size: int = 64,
                   num_workers: int | None = None) -> Iterator[dict[str, Any]]:
        """Stream embeddings of files, one batch at a time.

        Decoding runs in ``num_workers`` threads (default :func:`decode_threads`), a few
        batches ahead of the model. Threads rather than DataLoader worker processes: PIL
        decoding and resizing release the GIL, there is no per-run process start-up, and
        forking a process that holds LanceDB's async runtime risks a deadlock (LanceDB
        warns about exactly that).

        Yields:
            dicts with ``index`` (positions in ``paths`` embedded in this batch), ``vectors``
            (normalised float32), ``info`` (per index: fingerprint, size, mtime, width,
            height) and ``bad`` (``[(position, reason)]`` for unreadable files).
        """
        if batch_size < 1:
            raise ConfigError(f"--batch-size must be a positive integer; got {batch_size}.")
        dataset = _FileDataset([Path(p) for p in paths], self.preprocessing, exact=self.exact_resize)
        if self._expected_items is None:
            self._expected_items = len(dataset)
        workers = decode_threads() if num_workers is None else num_workers
        batches = ((x, (index, info, bad)) for x, index, info, bad in prefetch_batches(dataset, batch_size, workers))
        if self._uses_runner():
            results = self._get_runner().map_uint8(batches)
        else:
            results = ((None if x is None else self._forward(self.preprocessing.normalize_nhwc(x, self.device)), payload) for x, payload in batches)
        for y, (index, info, bad) in results:
            if y is None:
                vectors = np.zeros((0, self.dim), dtype=np.float32)
            else:
                vectors = normalize(y.reshape(len(y), -1).float().cpu().numpy())
            yield {"index": index, "vectors": vectors, "info": info, "bad": bad}

    def embed_files(self, paths: Sequence[str | os.PathLike], *, batch_size: int = 64,
                    num_workers: int | None = None) -> tuple[np.ndarray, np.ndarray, dict[int, str]]:
        """Embed image files.

        Returns:
            ``(vectors, ok_mask, reasons)``: ``(N, D)`` L2-normalised float32 (zero rows for
            unreadable files), a boolean mask of the files that were read, and
            ``{position: reason}`` for the others.
        """
        out = np.zeros((len(paths), self.dim), dtype=np.float32)
        ok = np.zeros(len(paths), dtype=bool)
        reasons: dict[int, str] = {}
        for batch in self.iter_files(paths, batch_size=batch_size, num_workers=num_workers):
            if len(batch["index"]):
                out[batch["index"]] = batch["vectors"]
                ok[batch["index"]] = True
            reasons.update(dict(batch["bad"]))
        return out, ok, reasons


def _model_id(backbone: str, weights: str, pre: Preprocessing, dim: int, digest: str | None) -> dict[str, Any]:
    return {"backbone": backbone, "weights": weights, "weights_digest": digest, "preprocessing": pre.to_dict(), "dim": int(dim)}


def file_digest(path: Path, *, chunk: int = 1 << 20) -> str:
    """blake2b-128 hex digest of a file's bytes."""
    h = hashlib.blake2b(digest_size=16)
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


class _FileDataset:
    """Reads each file once: hashes the bytes, decodes them, records the original (EXIF-oriented) size."""

    def __init__(self, paths: list[Path], pre: Preprocessing, *, exact: bool = False):
        self.paths = paths
        self.pre = pre
        self.exact = exact  # PIL's resize, as torchvision does it; JPEGs are then decoded by PIL too
        self.transform = pre.resize_crop_transform(exact=exact)  # uint8 HWC; normalised per batch (or by OpenVINO)
        self.max_pixels = max_pixels_limit()  # resolved once, here, so a bad setting fails before decoding starts

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int):
        path = self.paths[i]
        try:
            st = path.stat()
            data = path.read_bytes()
        except OSError as exc:
            return None, i, None, f"cannot read file ({exc.strerror or exc})"
        info = {"fingerprint": hashlib.blake2b(data, digest_size=16).hexdigest(), "size": st.st_size, "mtime": st.st_mtime_ns}
        try:
            im = None if self.exact else decode_jpeg_rgbx(data, max_pixels=self.max_pixels, draft_size=self.pre.resize_size)
            if im is not None:  # a plain JPEG, upright: its size is the array's
                info["width"], info["height"] = im.shape[1], im.shape[0]
            else:
                # decode first: load_image applies the pixel limit before PIL allocates anything
                im = load_image(io.BytesIO(data), max_pixels=self.max_pixels, draft_size=self.pre.resize_size, keep_gray=True)
                info["width"], info["height"] = _oriented_size(data)
            return self.transform(im), i, info, None
        except UnreadableImageError as exc:
            reason = re.sub(r"<_io\.BytesIO object at 0x[0-9a-fA-F]+>", path.name, str(exc))
            return None, i, None, reason or "not an image"
        except Exception as exc:  # noqa: BLE001 - e.g. a transform failing on a degenerate image
            return None, i, None, f"{type(exc).__name__}: {exc}"[:200]


def _oriented_size(data: bytes) -> tuple[int, int]:
    from PIL import Image

    try:
        with Image.open(io.BytesIO(data)) as im:
            w, h = im.size
            orientation = im.getexif().get(0x0112, 1)
    except Exception as exc:  # noqa: BLE001
        raise UnreadableImageError(str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__) from None
    return (h, w) if orientation in (5, 6, 7, 8) else (w, h)


# ---------------------------------------------------------------------- folder scan
@dataclass
class ImageEntry:
    """One image found under DATA."""

    path: Path
    relpath: str
    label: str
    split: str

    @property
    def id(self) -> str:
        return row_id(self.relpath)


def row_id(relpath: str) -> str:
    """Stable row id: blake2b-128 of the path relative to DATA (so a moved folder keeps its ids)."""
    return hashlib.blake2b(relpath.encode("utf-8"), digest_size=16).hexdigest()


def scan_folder(data: str | os.PathLike) -> list[ImageEntry]:
    """Images under ``data`` with their split and label.

    Layouts: ``DATA/<split>/<class>/*`` (split = train/val/test folder name), ``DATA/<class>/*``
    (split ``"all"``), or a flat ``DATA/*`` (label ``""``, split ``"all"``). Images directly
    inside a split folder or DATA get label ``""``.

    Raises:
        DataNotFoundError: ``data`` does not exist.
        DataError: not a folder, or no images.
    """
    root = Path(data)
    if not root.exists():
        raise DataNotFoundError(f"Image folder not found: {root}. Expected {root}/<class>/*.jpg, {root}/train/<class>/*.jpg or {root}/*.jpg.")
    if not root.is_dir():
        raise DataError(f"{root} is a file, not a folder. Pass the folder that holds the images.")
    root = root.resolve()
    subdirs = sorted(d for d in root.iterdir() if d.is_dir() and not d.name.startswith("."))
    split_dirs = [d for d in subdirs if d.name.lower() in _SPLIT_NAMES]
    entries: list[ImageEntry] = []
    if split_dirs:
        groups = [(d, d.name) for d in split_dirs]
    else:
        groups = [(root, "all")]
    for folder, split in groups:
        for p in sorted(f for f in folder.iterdir() if f.is_file() and is_image_file(f)):
            entries.append(ImageEntry(p, p.relative_to(root).as_posix(), "", split))
        for cdir in sorted(d for d in folder.iterdir() if d.is_dir() and not d.name.startswith(".")):
            for p in list_images(cdir):
                entries.append(ImageEntry(p, p.relative_to(root).as_posix(), cdir.name, split))
    if not entries:
        raise DataError(f"No images found under {root}. Expected {root}/<class>/*.jpg, {root}/train/<class>/*.jpg or {root}/*.jpg "
                        f"(jpg, png, bmp, gif, webp, tiff).")
    return entries


# ---------------------------------------------------------------------- embed_folder
@dataclass
class EmbedReport:
    """What :func:`embed_folder` did.

    Attributes:
        added, updated, removed, unchanged: row counts.
        skipped: unreadable files as ``{path: reason}``.
        num_rows: rows in the store afterwards.
        seconds: wall time; ``images_per_second`` over the embedded images.
    """

    added: int = 0
    updated: int = 0
    removed: int = 0
    unchanged: int = 0
    skipped: dict[str, str] = field(default_factory=dict)
    num_rows: int = 0
    seconds: float = 0.0
    images_per_second: float = 0.0
    store: str = ""
    inference: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"added": self.added, "updated": self.updated, "removed": self.removed, "unchanged": self.unchanged,
                "skipped": len(self.skipped), "skipped_files": dict(self.skipped), "num_rows": self.num_rows,
                "seconds": round(self.seconds, 3), "images_per_second": round(self.images_per_second, 1), "store": self.store,
                "inference": dict(self.inference)}


def embed_folder(extractor: Extractor, data: str | os.PathLike, store_path: str | os.PathLike, *, batch_size: int = 64,
                 quiet: bool = False, progress: bool = True, num_workers: int | None = None,
                 chunk_size: int | None = None) -> EmbedReport:
    """Mirror the images under ``data`` into the store at ``store_path`` (created if needed).

    Only new or changed files are embedded (size + mtime, then a blake2b of the bytes, decide
    what changed); rows of deleted files are dropped; unreadable files are skipped, listed
    and warned about. Rows are committed every ``chunk_size`` images, so a killed run is
    completed by running it again, with no duplicates.

    Args:
        extractor: the model (see :class:`Extractor`).
        data: the image folder (see :func:`scan_folder` for layouts).
        store_path: the store folder.
        batch_size: images per forward pass.
        quiet: no progress bar (warnings still go to the ``transferkit`` logger).
        progress: show a progress bar (stderr) with images/s.
        num_workers: decoding threads (default: :func:`decode_threads`).
        chunk_size: images per commit (default ``max(256, 4 * batch_size)``).

    Raises:
        DataNotFoundError / DataError: bad ``data``.
        StoreError / ModelMismatchError: the store cannot take these embeddings.
    """
    t0 = time.perf_counter()
    entries = scan_folder(data)
    store = EmbeddingStore.open_or_create(store_path, model_id=extractor.model_id, source=extractor.source,
                                          extra={"data_root": str(Path(data).resolve())})
    if store.meta.get("data_root") != str(Path(data).resolve()):
        store.update_meta(data_root=str(Path(data).resolve()))
    report = EmbedReport(store=str(store.path))
    # A store created just now has no rows, and reading them would import LanceDB and open the table (0.5-1.0 s)
    # before the first image; its table is made by the first commit, while the model runs.
    existing = {} if store.is_new else {
        r["id"]: r for r in store.rows(columns=["id", "path", "relpath", "label", "split", "fingerprint", "size", "mtime"])}
    todo: list[ImageEntry] = []
    refresh: list[tuple[ImageEntry, os.stat_result, str]] = []  # same content, new path/mtime/label
    for e in entries:
        old = existing.get(e.id)
        if old is None:
            todo.append(e)
            continue
        try:
            st = e.path.stat()
        except OSError:
            todo.append(e)  # will be reported as unreadable
            continue
        same_place = old["path"] == str(e.path) and old["label"] == e.label and old["split"] == e.split
        if old["size"] == st.st_size and old["mtime"] == st.st_mtime_ns and same_place:
            report.unchanged += 1
            continue
        if old["size"] == st.st_size:
            try:
                fp = file_digest(e.path)
            except OSError:
                todo.append(e)
                continue
            if fp == old["fingerprint"]:
                refresh.append((e, st, fp))
                continue
        todo.append(e)
    seen = {e.id for e in entries}
    stale = [i for i in existing if i not in seen]

    if refresh:
        _refresh_rows(store, refresh)
        report.unchanged += len(refresh)
    report.removed = store.delete(stale)

    chunk_size = chunk_size or max(256, 4 * batch_size)
    bar = _Progress(len(todo), enabled=progress and not quiet and len(todo) > 0)
    embedded = 0
    t_embed = time.perf_counter()
    rows: list[dict[str, Any]] = []
    bad_ids: list[str] = []

    writer = _StoreWriter(store)

    def commit() -> None:
        nonlocal embedded
        writer.submit(list(rows), list(bad_ids))  # waits for the previous commit first (raising its error)
        embedded += len(rows)
        for r in rows:
            if r["id"] in existing:
                report.updated += 1
            else:
                report.added += 1
        rows.clear()
        bad_ids.clear()

    try:
        # one decoding pipeline over all the files, with the rows committed every `chunk_size`
        # images (on the writer's thread, so the model is fed meanwhile) and a killed run keeps what it did
        for batch in extractor.iter_files([e.path for e in todo], batch_size=batch_size, num_workers=num_workers):
            for pos, vec, info in zip(batch["index"], batch["vectors"], batch["info"]):
                e = todo[pos]
                rows.append({"id": e.id, "path": str(e.path), "relpath": e.relpath, "label": e.label, "split": e.split,
                             **info, "vector": vec})
            for pos, reason in batch["bad"]:
                e = todo[pos]
                report.skipped[str(e.path)] = reason
                if e.id in existing:
                    bad_ids.append(e.id)  # its old embedding no longer describes the file
            bar.advance(len(batch["index"]) + len(batch["bad"]))
            if len(rows) + len(bad_ids) >= chunk_size:
                commit()
        if rows or bad_ids:
            commit()
        writer.wait()
    finally:
        writer.close()
        bar.close()
    for path, reason in report.skipped.items():
        log.warning("Skipped unreadable image %s: %s", path, reason)
    report.num_rows = len(store)
    report.seconds = time.perf_counter() - t0
    dt = time.perf_counter() - t_embed
    report.images_per_second = embedded / dt if embedded and dt > 0 else 0.0
    report.inference = extractor.inference_info
    return report


class _StoreWriter:
    """Commits chunks of rows to the store on one background thread, one chunk at a time.

    The thread that feeds the model goes on while a chunk is written. The first commit of a
    new store imports LanceDB and creates the table (1.2 s measured on the 2-core VM, on 1,357
    photos with ResNet-18), during which that thread used to stop submitting images: one
    core idled for about a second (CPU use sampled every 0.5 s). Commits stay in order, and
    :meth:`submit` waits for the previous one, so at most one chunk is in flight and its
    error surfaces at the next call.
    """

    def __init__(self, store: EmbeddingStore):
        from concurrent.futures import ThreadPoolExecutor

        self._store = store
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="transferkit-store")
        self._pending = None

    def _write(self, rows: list[dict[str, Any]], bad_ids: list[str]) -> None:
        self._store.upsert(rows)
        self._store.delete(bad_ids)

    def submit(self, rows: list[dict[str, Any]], bad_ids: list[str]) -> None:
        self.wait()
        self._pending = self._pool.submit(self._write, rows, bad_ids)

    def wait(self) -> None:
        """Block until the chunk in flight is committed; re-raise its error."""
        pending, self._pending = self._pending, None
        if pending is not None:
            pending.result()

    def close(self) -> None:
        """Let the chunk in flight finish (it is committed whole or not at all) and stop the thread.

        Only called after :meth:`wait` or while another error propagates, so a write error here is logged, not raised.
        """
        try:
            self.wait()
        except Exception as exc:  # noqa: BLE001 - the error already propagating is the one to report
            log.debug("store commit failed while stopping: %s", exc)
        finally:
            self._pool.shutdown(wait=True)


def _refresh_rows(store: EmbeddingStore, items: list[tuple[ImageEntry, os.stat_result, str]]) -> None:
    """Rewrite metadata of rows whose bytes did not change (moved folder, touched file), keeping their vectors."""
    by_id = {e.id: (e, st, fp) for e, st, fp in items}
    for start in range(0, len(items), 1000):
        ids = list(by_id)[start:start + 1000]
        from ..store.store import sql_quote

        old_rows = store.rows(where="id IN (" + ", ".join(sql_quote(i) for i in ids) + ")")
        rows = []
        for r in old_rows:
            e, st, fp = by_id[r["id"]]
            r.update(path=str(e.path), relpath=e.relpath, label=e.label, split=e.split, size=st.st_size, mtime=st.st_mtime_ns,
                     fingerprint=fp)
            rows.append(r)
        store.upsert(rows)


class _Progress:
    """A rich progress bar on stderr with images/s; a no-op when disabled."""

    def __init__(self, total: int, *, enabled: bool):
        self._p = None
        if not enabled:
            return
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

        self._p = Progress(
            TextColumn("Embedding"), BarColumn(), MofNCompleteColumn(),
            TextColumn("{task.fields[rate]}"), TimeRemainingColumn(),
            console=Console(stderr=True), transient=False,
        )
        self._start = time.perf_counter()
        self._done = 0
        self._task = self._p.add_task("embed", total=total, rate="")
        self._p.start()

    def advance(self, n: int) -> None:
        if self._p is None:
            return
        self._done += n
        dt = time.perf_counter() - self._start
        rate = f"{self._done / dt:.1f} img/s" if dt > 0 else ""
        self._p.update(self._task, advance=n, rate=rate)

    def close(self) -> None:
        if self._p is not None:
            self._p.stop()
            self._p = None
