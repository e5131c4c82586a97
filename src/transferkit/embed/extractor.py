"""Extractors: a model with its classifier removed, and what a store needs to know about it.

:class:`Extractor` adds to the spec's :class:`FeatureExtractor` the preprocessing that belongs
to the weights, a ``model_id`` that identifies model + weights + preprocessing + resize
kernel, batched embedding of files, and a serialisable :attr:`~Extractor.recipe` to rebuild
it elsewhere (a cluster worker).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from .._hashing import file_digest, state_dict_digest
from ..backbones import Preprocessing
from ..config import Settings
from ..errors import ConfigError, ModelMismatchError, StoreError
from ..inference.devices import resolve_device
from ..inference.policy import PRECISIONS, validate
from ..inference.torch_backend import forward
from ..store.store import normalize, same_model
from .feature_extractor import FeatureExtractor, trunk_of

__all__ = ["RESIZE_EXACT", "RESIZE_FAST", "Extractor", "FeatureExtractor"]

#: The resize kernels of :class:`Extractor` (``model_id["resize"]``): PyTorch's vectorised uint8
#: kernel (the default), or PIL's, exactly as the weights' torchvision transform.
RESIZE_FAST, RESIZE_EXACT = "torch-uint8", "pil-exact"


class Extractor:
    """Batched, normalised image embeddings with a record of which model made them.

    Build with :meth:`from_backbone`, :meth:`from_run`, :meth:`from_model`, :meth:`from_source`,
    :meth:`from_store` or :meth:`from_recipe`.

    Args:
        module: maps ``(B, 3, H, W)`` to ``(B, D)`` (or anything that flattens to it); or a
            zero-argument callable that builds it, called only when the module is needed
            (with ``weights_key`` naming a cached OpenVINO conversion, it never is).
        preprocessing: the preprocessing the weights expect.
        model_id: identifies model, weights and preprocessing (stored in the store); the
            resize kernel (``"resize"``) is added from ``exact_resize``.
        source: how to rebuild the model (``{"run": DIR}`` or ``{"backbone": NAME, "weights": W}``).
        device: ``"cpu"``, ``"cuda"``, ... (default: :func:`~transferkit.inference.devices.resolve_device`).
        channels_last: use the channels-last memory format (faster convolutions; results differ
            from contiguous fp32 by float rounding only). ``False`` with ``backend="torch",
            precision="fp32"`` is the exact eager reference.
        backend: ``"auto"`` (see :func:`~transferkit.inference.policy.decide`), ``"torch"`` or ``"openvino"``.
        precision: ``"auto"`` (bf16 only if, on the first batch, every embedding keeps cosine
            >= 0.999 to fp32), ``"fp32"`` or ``"bf16"``.
        exact_resize: decode files with PIL's resize, exactly as the weights' torchvision
            transform does. Default ``False``: PyTorch's vectorised uint8 resize, 3.5x faster
            for bicubic and within 2 grey levels per pixel (embeddings at cosine >= 0.99997).
        weights_key: identifies the weights in the conversion cache; default: a digest of the state_dict.
        bf16_safe: False for a model known to fail the bf16 fidelity bar. Default: the registry
            entry (``BackboneSpec.bf16_safe``) of the backbone named in ``model_id``.
        settings: where conversions are cached (``None``: the environment's settings).
    """

    def __init__(self, module: nn.Module | Callable[[], nn.Module], *, preprocessing: Preprocessing, model_id: dict[str, Any],
                 source: dict[str, Any] | None = None, device: str | torch.device | None = None,
                 channels_last: bool = True, precision: str = "auto", backend: str = "auto", exact_resize: bool = False,
                 weights_key: str | None = None, bf16_safe: bool | None = None, settings: Settings | None = None):
        validate(backend, precision)
        self.backend = backend
        self.precision = precision
        self.exact_resize = bool(exact_resize)
        self.device = torch.device(device) if device is not None else resolve_device("auto")
        self.channels_last = channels_last
        self.weights_key = weights_key
        self.settings = settings
        self._bf16_safe = bf16_safe
        self._runner = None
        self._expected_items: int | None = None
        is_module = isinstance(module, nn.Module)
        self._module: nn.Module | None = self._prepare(module) if is_module else None
        self._build = None if is_module else module
        self.preprocessing = preprocessing
        self.model_id = {**model_id, "resize": RESIZE_EXACT if self.exact_resize else RESIZE_FAST}
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
        """Extractor from a registered backbone (``weights``: ``"default"``, ``"none"`` or a file), or from a file written
        by ``transferkit export``, named ``onnx:FILE`` or ``openvino:FILE.xml`` (run by OpenVINO, no PyTorch model built).

        When the weights are a file on disk (the default weights once downloaded or bundled,
        or ``weights=FILE``) whose OpenVINO conversion is cached, the PyTorch module is built
        only if something needs it.

        Raises:
            UnknownNameError, WeightsUnavailableError, DataNotFoundError, ConfigError: see ``create_backbone``.
        """
        if str(name).startswith(("onnx:", "openvino:")):
            from ..export.runtime import exported_extractor
            return exported_extractor(cls, str(name), weights=weights, **kwargs)
        from ..backbones import create_backbone, get_backbone_spec
        from ..inference.cache import cached_model_info, model_key

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
        cached = cached_model_info(key, kwargs.get("settings")) if key else None
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
        """Extractor from the backbone of a trained run.

        Raises:
            RunError: not a run, or corrupt.
        """
        from ..inference.cache import cached_model_info, model_key
        from ..training.model import load_model, read_model_meta

        run_dir = Path(run_dir)
        meta = read_model_meta(run_dir)
        weights_file = run_dir / "model.safetensors"
        digest = file_digest(weights_file) if weights_file.is_file() else None
        pre = Preprocessing.from_dict(meta["preprocessing"])
        key = model_key("run-backbone", digest, pre.input_size) if digest else None
        cached = cached_model_info(key, kwargs.get("settings")) if key else None
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
        """Extractor from any model :class:`FeatureExtractor` accepts (identity from its class and weights digest)."""
        from ..backbones import backbone_bf16_safe

        trunk, pre = trunk_of(model)
        pre = pre or Preprocessing()
        was = trunk.training
        trunk.eval()
        dim = int(forward(trunk, torch.zeros(1, 3, pre.input_size, pre.input_size), channels_last=False).shape[1])
        trunk.train(was)
        tag = getattr(trunk, "weights_tag", "in-memory")
        # the trunk's own registry name: ``name`` may relabel it in the model_id
        kwargs.setdefault("bf16_safe", backbone_bf16_safe(str(getattr(trunk, "name", ""))))
        model_id = _model_id(name or getattr(trunk, "name", type(model).__name__), tag, pre, dim, state_dict_digest(trunk))
        return cls(trunk, preprocessing=pre, model_id=model_id, source={}, **kwargs)

    @classmethod
    def from_source(cls, source: dict[str, Any], **kwargs) -> Extractor:
        """Rebuild the extractor recorded in a store's metadata ``source``.

        Raises:
            ConfigError: ``source`` names no rebuildable model.
        """
        if source.get("run"):
            return cls.from_run(source["run"], **kwargs)
        if source.get("backbone"):
            return cls.from_backbone(source["backbone"], weights=source.get("weights", "default"), **kwargs)
        raise ConfigError("This model was not recorded as a registered backbone or a trained run, so it cannot be rebuilt. "
                          "Query the store by `id` or `vector`, or embed into a new store from a backbone or a run.")

    @classmethod
    def from_store(cls, store, **kwargs) -> Extractor:
        """The store's model, rebuilt to embed exactly like the stored vectors: the store's recorded
        backend, precision and resize kernel (``kwargs`` may override any of them, or set ``device``).

        Args:
            store: an open :class:`~transferkit.store.EmbeddingStore`.

        Raises:
            StoreError: the store records no rebuildable model.
            ModelMismatchError: the rebuilt model is no longer the store's (its weights changed).
        """
        source = store.meta.get("source") or {}
        if not (source.get("run") or source.get("backbone")):
            raise StoreError(f"The store {store.uri} records no model that can be rebuilt, so it cannot embed a query image. "
                             f"Query it by `vector` or `id`, or pass the `extractor` that made its vectors.")
        if source.get("backbone") and source.get("weights") == "none":  # a new random init is another model
            raise StoreError(f"The store {store.uri} was embedded with randomly initialised weights (`weights` 'none'), "
                             f"which cannot be rebuilt, so it cannot embed a query image. Query it by `vector` or `id`, "
                             f"or pass the `extractor` that made its vectors.")
        inference = store.meta.get("inference") or {}
        kwargs.setdefault("exact_resize", store.model_id.get("resize", RESIZE_FAST) == RESIZE_EXACT)
        kwargs.setdefault("backend", inference.get("backend", "auto"))
        recorded = inference.get("precision", "auto")
        kwargs.setdefault("precision", recorded if recorded in PRECISIONS else "auto")  # fp16 (CUDA AMP): auto picks it again
        extractor = cls.from_source(source, **kwargs)
        store.check_model(extractor.model_id)
        return extractor

    # -------------------------------------------------------------- recipe
    @property
    def recipe(self) -> dict[str, Any]:
        """A JSON-able description that :meth:`from_recipe` rebuilds this extractor from (in another process).

        Raises:
            ConfigError: the extractor was made from an in-memory model (nothing to rebuild it from).
        """
        if not (self.source.get("run") or self.source.get("backbone")):
            raise ConfigError("An extractor made from an in-memory model has no recipe. Save it as a run, or use a "
                              "registered backbone.")
        return {"source": dict(self.source), "backend": self.backend, "precision": self.precision,
                "resize": self.model_id["resize"], "device": self.device.type, "channels_last": self.channels_last,
                "model_id": dict(self.model_id)}

    @classmethod
    def from_recipe(cls, recipe: dict[str, Any], **kwargs) -> Extractor:
        """Rebuild an extractor from its :attr:`recipe` (``kwargs``, e.g. ``settings``, are passed on).

        Raises:
            ModelMismatchError: the rebuilt model differs from the recipe's (e.g. the weights file changed).
        """
        opts = {"backend": recipe.get("backend", "auto"), "precision": recipe.get("precision", "auto"),
                "exact_resize": recipe.get("resize", RESIZE_FAST) == RESIZE_EXACT,
                "channels_last": bool(recipe.get("channels_last", True)), "device": recipe.get("device"), **kwargs}
        extractor = cls.from_source(recipe["source"], **opts)
        if recipe.get("model_id") and not same_model(recipe["model_id"], extractor.model_id):
            raise ModelMismatchError(f"The model rebuilt from {recipe['source']} is not the one the recipe was made from "
                                     f"(its weights or preprocessing changed).")
        return extractor

    # -------------------------------------------------------------- backend and precision
    def pin(self, inference: dict[str, Any], *, where: str = "the store") -> None:
        """Use the ``precision`` recorded in ``inference`` (and, for a reduced precision, the ``backend``) where
        this extractor says ``auto``.

        fp32 vectors from either backend agree within the conversion check's cosine 0.9999, so an fp32 store
        made by a small job on torch may take a large job's OpenVINO vectors; bf16 ones differ by backend.

        Raises:
            ModelMismatchError: an explicit precision (or a reduced precision's backend) differs from the recorded one.
        """
        names = ("precision",) if inference.get("precision") in (None, "fp32") else ("backend", "precision")
        for name in names:
            recorded, mine = inference.get(name), getattr(self, name)
            if recorded is None or mine == recorded:
                continue
            if mine != "auto":
                raise ModelMismatchError(
                    f"{where} holds embeddings made with {name} {recorded}, but this extractor uses {name} {mine}; "
                    f"mixing them would make similarities inexact. Set `{name}` to auto (or {recorded}), or embed "
                    f"into a new store.")
            if name == "backend" or recorded in PRECISIONS:
                setattr(self, name, recorded)
        if self._runner is not None and tuple(self._runner.requested) != (self.backend, self.precision):
            self._runner = None

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
                                           bf16_safe=self.bf16_safe, settings=self.settings)
        return self._runner

    def _forward(self, x: torch.Tensor) -> torch.Tensor:
        if self._uses_runner():
            y = self._get_runner()(x)
            return y.reshape(y.shape[0], -1).float()
        return forward(self.module, x, device=self.device, autocast_dtype=torch.bfloat16 if self.precision == "bf16" else None,
                       channels_last=self.channels_last)

    def encode_uint8(self, batches: Iterable[tuple[np.ndarray | None, Any]]) -> Iterator[tuple[torch.Tensor | None, Any]]:
        """Raw features of uint8 ``(B, H, W, 3)`` batches, ``(images or None, payload)`` in, ``(features or None, payload)`` out."""
        if self._uses_runner():
            yield from self._get_runner().map_uint8(batches)
            return
        for x, payload in batches:
            yield (None if x is None else self._forward(self.preprocessing.normalize_nhwc(x, self.device))), payload

    # -------------------------------------------------------------- embedding
    def embed_tensors(self, x: torch.Tensor) -> np.ndarray:
        """Raw (not normalised) float32 ``(B, D)`` embeddings of preprocessed images."""
        return self._forward(x).cpu().numpy()

    def embed_images(self, images: Sequence[Any]) -> np.ndarray:
        """L2-normalised float32 ``(N, D)`` embeddings of PIL images, resized and encoded as files are."""
        from ..data.datasets import collate

        if not images:
            return np.zeros((0, self.dim), dtype=np.float32)
        transform = self.preprocessing.resize_crop_transform(exact=self.exact_resize)
        x, _, _, _ = collate([(transform(_upright(im)), None, i, None) for i, im in enumerate(images)])
        y, _ = next(self.encode_uint8([(x, None)]))
        return normalize(y.reshape(len(y), -1).float().cpu().numpy())

    def iter_files(self, paths: Sequence[str | os.PathLike], *, batch_size: int = 64, num_workers: int | None = None,
                   settings: Settings | None = None) -> Iterator[dict[str, Any]]:
        """Stream embeddings of files, one batch at a time (see :func:`~transferkit.embed.stages.embed_batches`).

        Yields:
            dicts with ``index`` (positions in ``paths`` embedded in this batch), ``vectors``
            (normalised float32), ``info`` (per index: fingerprint, size, mtime, width,
            height) and ``bad`` (``[(position, reason)]`` for unreadable files).
        """
        from .stages import embed_batches

        if self._expected_items is None:
            self._expected_items = len(paths)
        yield from embed_batches(self, paths, batch_size=batch_size, num_workers=num_workers, settings=settings)

    def embed_files(self, paths: Sequence[str | os.PathLike], *, batch_size: int = 64, num_workers: int | None = None,
                    settings: Settings | None = None) -> tuple[np.ndarray, np.ndarray, dict[int, str]]:
        """Embed image files.

        Returns:
            ``(vectors, ok_mask, reasons)``: ``(N, D)`` L2-normalised float32 (zero rows for
            unreadable files), a boolean mask of the files that were read, and
            ``{position: reason}`` for the others.
        """
        out = np.zeros((len(paths), self.dim), dtype=np.float32)
        ok = np.zeros(len(paths), dtype=bool)
        reasons: dict[int, str] = {}
        for batch in self.iter_files(paths, batch_size=batch_size, num_workers=num_workers, settings=settings):
            if len(batch["index"]):
                out[batch["index"]] = batch["vectors"]
                ok[batch["index"]] = True
            reasons.update(dict(batch["bad"]))
        return out, ok, reasons


def _upright(im):
    """A PIL image as the file decoders hand it on: EXIF orientation applied, greyscale kept, else RGB."""
    from PIL import ImageOps

    from ..data.decode import to_rgb

    im = ImageOps.exif_transpose(im)
    return im if im.mode == "L" else to_rgb(im)


def _model_id(backbone: str, weights: str, pre: Preprocessing, dim: int, digest: str | None) -> dict[str, Any]:
    return {"backbone": backbone, "weights": weights, "weights_digest": digest, "preprocessing": pre.to_dict(), "dim": int(dim)}
