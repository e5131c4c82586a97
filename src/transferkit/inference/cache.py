"""The on-disk cache of converted models and of precision verdicts, at a location the caller passes in.

Layout under ``root`` (callers pass ``Settings.cache_dir``): ``openvino/<key>-s.xml|.bin`` (the
converted model), ``openvino/<key>-s.json`` (its record: output ``dim`` and the conversion check),
``openvino/compiled/`` (OpenVINO's compiled blobs), ``precision/<key>-<backend>[-<device>].json``
(the remembered bf16 verdict). Everything here is an optimisation: unreadable entries are misses.
"""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path
from typing import Any

log = logging.getLogger("transferkit")

#: Bumped when the conversion recipe changes, so older cache entries are not reused.
CONVERSION_VERSION = 3


def model_key(*parts: object) -> str:
    """A cache key for a converted model from parts that identify weights and input size (e.g. a file digest)."""
    h = hashlib.blake2b(digest_size=16)
    h.update(f"conversion-v{CONVERSION_VERSION}".encode())
    for part in parts:
        h.update(b"\0" + str(part).encode())
    return h.hexdigest()


def module_key(module, input_size: int) -> str:
    """The cache key of a module's weights at ``input_size`` (when no cheaper name for the weights is known)."""
    from .._hashing import state_dict_digest

    return model_key("state_dict", state_dict_digest(module, input_size))


class ConversionCache:
    """Converted models and precision verdicts under ``root``."""

    def __init__(self, root: str | Path):
        self.root = Path(root)

    @classmethod
    def from_settings(cls, settings=None) -> ConversionCache:
        """The cache at ``settings.cache_dir`` (``None``: the environment's settings)."""
        from ..config import resolve_settings

        return cls(resolve_settings(settings).cache_dir)

    def __repr__(self) -> str:
        return f"ConversionCache({str(self.root)!r})"

    # -- files ---------------------------------------------------------------------------------------
    def model_file(self, key: str, suffix: str) -> Path:
        """``<root>/openvino/<key>-s<suffix>``: the converted model (``.xml``/``.bin``) and its record (``.json``)."""
        return self.root / "openvino" / f"{key}-s{suffix}"

    def blob_dir(self) -> Path | None:
        """OpenVINO's compiled-blob cache folder (created), or None when it cannot be created."""
        folder = self.root / "openvino" / "compiled"
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            log.debug("no OpenVINO compile cache: %s", exc)
            return None
        return folder

    def precision_file(self, key: str, backend: str, device_type: str = "cpu") -> Path:
        device = "" if device_type == "cpu" else f"-{device_type}"  # AMP on a GPU is another question
        return self.root / "precision" / f"{key}-{backend}{device}.json"

    # -- records -------------------------------------------------------------------------------------
    @staticmethod
    def read_record(path: Path) -> dict[str, Any] | None:
        """A small JSON record, or None if it is missing or unreadable."""
        try:
            rec = json.loads(Path(path).read_text())
        except (OSError, ValueError):
            return None
        return rec if isinstance(rec, dict) else None

    @staticmethod
    def write_record(path: Path, record: dict[str, Any]) -> None:
        from .._io import write_json_atomic

        try:
            Path(path).parent.mkdir(parents=True, exist_ok=True)
            write_json_atomic(path, record)
        except OSError as exc:  # an optimisation only
            log.debug("cannot write cache record %s: %s", path, exc)

    def record_conversion(self, key: str, record: dict[str, Any]) -> None:
        self.write_record(self.model_file(key, ".json"), record)

    def cached_model_info(self, key: str) -> dict[str, Any] | None:
        """What the cache knows about the model converted under ``key`` (its output ``dim`` and the
        conversion check), or None when there is no verified conversion to run without the module."""
        info = self.read_record(self.model_file(key, ".json"))
        try:
            ok = info is not None and info.get("conversion_ok") is True and int(info["dim"]) > 0
        except (KeyError, TypeError, ValueError):
            return None
        xml = self.model_file(key, ".xml")
        return info if ok and xml.exists() and xml.with_suffix(".bin").exists() else None

    def size_bytes(self) -> int:
        """Bytes of every file under ``root`` (0 when it does not exist)."""
        total = 0
        if self.root.is_dir():
            for p in self.root.rglob("*"):
                try:
                    if p.is_file():
                        total += p.stat().st_size
                except OSError:
                    pass
        return total


def cached_model_info(key: str, settings=None) -> dict[str, Any] | None:
    """:meth:`ConversionCache.cached_model_info` in the cache of ``settings`` (``None``: the environment's)."""
    return ConversionCache.from_settings(settings).cached_model_info(key)
