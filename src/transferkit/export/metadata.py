"""What an exported file says about itself: the preprocessing, the class names, where it came from, its parity check.

ONNX keeps it in ``metadata_props`` (keys ``transferkit.<name>``), an OpenVINO IR in its ``rt_info``
under ``transferkit`` (``<name>``). Values are strings, JSON for the structured ones, so any ONNX
tool shows them (Netron's model properties, ``onnx.load(f).metadata_props``); :func:`read_export_metadata`
reads either format back.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .. import __version__
from ..backbones import Preprocessing
from ..errors import ConfigError, DataNotFoundError

#: Bumped when the meaning of a key changes.
METADATA_VERSION = 1
PREFIX = "transferkit"
#: Export format -> the suffix of the file named by ``out``.
SUFFIXES = {"onnx": ".onnx", "openvino": ".xml"}
#: What each kind of export outputs (the first output is the one the parity check compares).
OUTPUTS = {"embedder": ("features",), "classifier": ("logits", "probabilities")}
_JSON_KEYS = ("preprocessing", "classes", "input_shape", "outputs", "source", "parity")
_TEXT_KEYS = ("metadata_version", "transferkit_version", "what", "model", "weights", "dim", "fixed_size")


@dataclass(frozen=True)
class ExportMetadata:
    """The metadata of an exported model.

    Attributes:
        what: ``"embedder"`` (output ``features``, ``(batch, dim)``) or ``"classifier"`` (outputs ``logits`` and
            ``probabilities``, ``(batch, classes)``).
        model: the backbone's registry name (``efficientnet_lite0``).
        weights: the weights tag (``IMAGENET1K_LITE0``, ``none``, ``file:x.pth``).
        preprocessing: how images must be prepared: resize the shorter side to ``resize_size`` with
            ``interpolation`` (antialiased), centre-crop ``input_size``, RGB scaled to [0, 1], minus ``mean``,
            divided by ``std``, NCHW float32.
        dim: the width of the first output (features, or classes).
        classes: the class names (a run's; empty for a bare backbone).
        input_shape: ``["batch", 3, H, W]``, or ``["batch", 3, "height", "width"]`` when the size is dynamic.
        outputs: the output names.
        fixed_size: why the input size is fixed ("" when it is dynamic).
        source: where the model came from (``{"run": DIR}`` or ``{"backbone": NAME, "weights": W}``).
        parity: the check against PyTorch (runtime, batch, input size, max abs difference, min cosine).
        transferkit_version: the version that wrote the file.
    """

    what: str
    model: str
    weights: str
    preprocessing: Preprocessing
    dim: int
    classes: list[str] = field(default_factory=list)
    input_shape: list[Any] = field(default_factory=list)
    outputs: list[str] = field(default_factory=list)
    fixed_size: str = ""
    source: dict[str, Any] = field(default_factory=dict)
    parity: list[dict[str, Any]] = field(default_factory=list)
    transferkit_version: str = __version__
    metadata_version: int = METADATA_VERSION

    def to_dict(self) -> dict[str, Any]:
        """JSON-able fields (the preprocessing as its dict, with the crop spelled out)."""
        return {"metadata_version": self.metadata_version, "transferkit_version": self.transferkit_version,
                "what": self.what, "model": self.model, "weights": self.weights, "dim": self.dim,
                "preprocessing": preprocessing_record(self.preprocessing), "classes": list(self.classes),
                "input_shape": list(self.input_shape), "outputs": list(self.outputs), "fixed_size": self.fixed_size,
                "source": dict(self.source), "parity": [dict(p) for p in self.parity]}

    def to_props(self) -> dict[str, str]:
        """The key/value strings stored in the file (keys without the ``transferkit`` prefix)."""
        d = self.to_dict()
        return {k: json.dumps(d[k]) if k in _JSON_KEYS else str(d[k]) for k in (*_TEXT_KEYS, *_JSON_KEYS)}

    @classmethod
    def from_props(cls, props: dict[str, str], *, path: str | os.PathLike) -> ExportMetadata:
        """Parse :meth:`to_props`' strings.

        Raises:
            ConfigError: no transferkit metadata, or metadata this version cannot read.
        """
        if not props:
            raise ConfigError(f"{path} has no transferkit metadata (preprocessing, outputs): it was not written by "
                              f"transferkit export. Export the model with it (transferkit export, or tk.export_model).")
        try:
            version = int(props.get("metadata_version", "0"))
            if version != METADATA_VERSION:
                raise ValueError(f"metadata version {version}, this transferkit reads {METADATA_VERSION}")
            loaded = {k: json.loads(props[k]) for k in _JSON_KEYS if k in props}
            return cls(what=props["what"], model=props["model"], weights=props["weights"], dim=int(props["dim"]),
                       preprocessing=Preprocessing.from_dict(loaded["preprocessing"]),
                       classes=list(loaded.get("classes", [])), input_shape=list(loaded.get("input_shape", [])),
                       outputs=list(loaded.get("outputs", [])), fixed_size=props.get("fixed_size", ""),
                       source=dict(loaded.get("source", {})), parity=list(loaded.get("parity", [])),
                       transferkit_version=props.get("transferkit_version", "?"), metadata_version=version)
        except (KeyError, TypeError, ValueError) as exc:
            raise ConfigError(f"The transferkit metadata of {path} is incomplete or of another version ({exc}). "
                              f"Export the model again with this transferkit.") from None


def preprocessing_record(pre: Preprocessing) -> dict[str, Any]:
    """:meth:`Preprocessing.to_dict` with the steps spelled out, for readers other than transferkit."""
    return {**pre.to_dict(), "crop": "center", "crop_fraction": round(pre.input_size / pre.resize_size, 6),
            "color": "RGB", "scale": "1/255", "layout": "NCHW", "dtype": "float32",
            "steps": f"resize the shorter side to {pre.resize_size} ({pre.interpolation}, antialiased), centre-crop "
                     f"{pre.input_size}x{pre.input_size}, scale to [0, 1], subtract mean, divide by std"}


def format_of(path: str | os.PathLike) -> str:
    """The export format a file name implies (``.onnx`` or ``.xml``).

    Raises:
        ConfigError: another suffix.
    """
    suffix = Path(path).suffix.lower()
    for fmt, expected in SUFFIXES.items():
        if suffix == expected:
            return fmt
    raise ConfigError(f"{path} is neither an ONNX file (.onnx) nor an OpenVINO IR (.xml). Pass a file written by "
                      f"transferkit export.")


# -- writing -------------------------------------------------------------------------------------
def write_onnx_metadata(path: str | os.PathLike, meta: ExportMetadata) -> None:
    """Replace the transferkit keys of the ONNX file at ``path`` with ``meta``'s (the graph is rewritten unchanged)."""
    import onnx

    model = onnx.load(str(path))
    keep = [(p.key, p.value) for p in model.metadata_props if not p.key.startswith(PREFIX + ".")]
    del model.metadata_props[:]
    for key, value in [*keep, *((f"{PREFIX}.{k}", v) for k, v in meta.to_props().items())]:
        model.metadata_props.add(key=key, value=value)
    onnx.save(model, str(path))


def set_openvino_metadata(model, meta: ExportMetadata) -> None:
    """Put ``meta`` into an ``openvino.Model``'s ``rt_info`` (saved with it)."""
    for key, value in meta.to_props().items():
        model.set_rt_info(value, [PREFIX, key])


# -- reading -------------------------------------------------------------------------------------
def check_file(path: str | os.PathLike) -> Path:
    """``path`` (and an IR's ``.bin``) exist.

    Raises:
        DataNotFoundError: a file is missing.
    """
    path = Path(path)
    if not path.is_file():
        raise DataNotFoundError(f"Exported model not found: {path}. Export one with transferkit export (or tk.export_model).")
    if path.suffix.lower() == ".xml" and not path.with_suffix(".bin").is_file():
        raise DataNotFoundError(f"{path.with_suffix('.bin')} is missing: an OpenVINO IR is an .xml file and the .bin "
                                f"file of its weights beside it. Copy both, or export the model again.")
    return path


def onnx_props(path: str | os.PathLike) -> dict[str, str]:
    """The transferkit metadata of an ONNX file.

    Raises:
        ConfigError: not an ONNX model file.
    """
    import onnx

    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as exc:  # noqa: BLE001 - protobuf's DecodeError and friends: not a model file
        raise ConfigError(f"{path} is not an ONNX model file ({_first_line(exc)}). Pass a file written by "
                          f"transferkit export.") from None
    if not model.graph.node:
        raise ConfigError(f"{path} is not an ONNX model file (it holds no graph). Pass a file written by transferkit export.")
    return {p.key[len(PREFIX) + 1:]: p.value for p in model.metadata_props if p.key.startswith(PREFIX + ".")}


def read_openvino(path: str | os.PathLike):
    """``(model, props)``: an OpenVINO file (IR or ONNX) read by OpenVINO, and the transferkit keys of an IR.

    Raises:
        ConfigError: OpenVINO cannot read it as a model.
    """
    from ..inference.openvino_backend import openvino_core

    try:
        model = openvino_core().read_model(str(path))
    except Exception as exc:  # noqa: BLE001 - OpenVINO raises RuntimeError for any unreadable file
        raise ConfigError(f"{path} is not a model file OpenVINO can read ({_first_line(exc)}). Pass a file written by "
                          f"transferkit export.") from None
    props = {}
    if Path(path).suffix.lower() == ".xml":
        for key in (*_TEXT_KEYS, *_JSON_KEYS):
            if model.has_rt_info([PREFIX, key]):
                props[key] = model.get_rt_info([PREFIX, key]).astype(str)
    return model, props


def read_export_metadata(path: str | os.PathLike) -> ExportMetadata:
    """The metadata of a file written by ``transferkit export`` (``.onnx``, or an OpenVINO ``.xml``).

    Raises:
        DataNotFoundError: the file (or an IR's ``.bin``) is missing.
        ConfigError: not a model file, or one without transferkit metadata.
    """
    path = check_file(path)
    props = onnx_props(path) if format_of(path) == "onnx" else read_openvino(path)[1]
    return ExportMetadata.from_props(props, path=path)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return (text[0] if text else type(exc).__name__)[:160]
