"""Export: a run's classifier or embedder, or a backbone's embedder, as ONNX or OpenVINO IR, checked against PyTorch.

:func:`export_model` writes the file; :func:`read_export_metadata` reads back its preprocessing, class
names and parity check; ``Extractor.from_backbone("onnx:FILE")`` embeds with it (OpenVINO, no
PyTorch model).
"""

from .api import ExportResult, export_model
from .metadata import ExportMetadata, read_export_metadata

__all__ = ["ExportMetadata", "ExportResult", "export_model", "read_export_metadata"]
