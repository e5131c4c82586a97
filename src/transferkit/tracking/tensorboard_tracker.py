"""TensorBoard tracking: a training run's parameters, epochs, final metrics and confusion matrix as event files."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ..errors import ConfigError, MissingDependencyError
from .base import Tracker, flat_values, flatten_params

INSTALL_HINT = "pip install 'transferkit[tensorboard]'"


class TensorBoardTracker(Tracker):
    """Writes a run's TensorBoard event files (``torch.utils.tensorboard``; needs the ``tensorboard`` extra).

    Scalars per epoch (``train/loss``, ``train/accuracy``, ``val/loss``, ``val/accuracy``, ``lr/<group>``,
    ``epoch/seconds``, ...), the parameters as a text table and in the HParams dashboard, and at the end
    ``final/<metric>`` scalars, the confusion matrix as an image and a table, and where the model files are.

    Args:
        uri: a folder for the logs of many runs: each run logs into ``<uri>/<experiment>/<run folder name>``
            (a new name gets ``-2``, ``-3``... rather than mix two runs). None: ``<run>/tensorboard``.
        experiment: the sub-folder of ``uri`` (ignored without ``uri``).

    Raises:
        MissingDependencyError: ``tensorboard`` is not installed.
    """

    name = "tensorboard"
    title = "TensorBoard"

    def __init__(self, *, uri: str | None = None, experiment: str = "transferkit"):
        super().__init__(uri=uri, experiment=experiment)
        self.log_dir: Path | None = None
        self._writer = None
        self._params: dict[str, Any] = {}

    @staticmethod
    def _library():
        return _summary_writer()

    def _open(self) -> None:
        saved = self.previous.get("log_dir")
        if saved:
            self.log_dir = Path(saved)
        elif self.uri:
            base = Path(self.uri) / self.experiment / self.run_dir.name
            candidate, n = base, 1
            while candidate.exists() and any(candidate.iterdir()):
                n += 1
                candidate = base.with_name(f"{base.name}-{n}")
            self.log_dir = candidate
        else:
            self.log_dir = self.run_dir / "tensorboard"
        try:
            self.log_dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise ConfigError(f"Cannot write TensorBoard logs to {self.log_dir}: {exc.strerror or exc}. "
                              "Choose another `tracker_uri` folder.") from None

    def _start(self, params: dict[str, Any], *, epoch: int) -> None:
        # A resumed run drops what a killed one logged after its last checkpoint, so no step is logged twice.
        self._writer = self._library()(log_dir=str(self.log_dir), purge_step=epoch + 1 if epoch else None)
        self._params = params
        if not self.previous:
            rows = "".join(f"| {k} | {v.replace('|', '/')} |\n" for k, v in flatten_params(params, max_length=500).items())
            self._writer.add_text("params", "| parameter | value |\n|---|---|\n" + rows, 0)
        self._writer.flush()
        self._record(log_dir=str(self.log_dir.resolve()))
        self.reporter.message(f"TensorBoard: logging to {self.log_dir} (view: tensorboard --logdir {self.log_dir})",
                              tracker=self.name, log_dir=str(self.log_dir))

    def _log_epoch(self, step: int, metrics: dict[str, float]) -> None:
        for key, value in metrics.items():
            self._writer.add_scalar(scalar_tag(key), value, step)
        self._writer.flush()  # the dashboard shows each epoch as it ends, not every two minutes

    def _finish(self, metrics: dict[str, float], confusion: dict[str, Any], files: dict[str, str], *, step: int) -> None:
        import numpy as np
        from PIL import Image
        from torch.utils.tensorboard.summary import hparams

        w = self._writer
        for key, value in metrics.items():
            w.add_scalar(f"final/{key}", value, step)
        png = self.run_dir / "confusion_matrix.png"
        if png.is_file():
            with Image.open(png) as im:
                w.add_image("confusion_matrix", np.asarray(im.convert("RGB")), step, dataformats="HWC")
        w.add_text("confusion_matrix", _markdown_matrix(confusion), step)
        w.add_text("artefacts", "".join(f"- {(self.run_dir / name).resolve()}\n" for name in files), step)
        values = {k: v if isinstance(v, (bool, int, float, str)) else json.dumps(v, default=str)
                  for k, v in flat_values(self._params).items()}
        for summary in hparams(values, {f"final/{k}": v for k, v in metrics.items()}):
            w.file_writer.add_summary(summary)
        w.flush()

    def _close(self, status: str) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None


def scalar_tag(key: str) -> str:
    """The TensorBoard tag of a ``history.csv`` column: ``train_loss`` -> ``train/loss``, ``lr_head`` -> ``lr/head``,
    others under ``epoch/``."""
    prefix, _, rest = key.partition("_")
    return f"{prefix}/{rest}" if prefix in ("train", "val", "lr") and rest else f"epoch/{key}"


def _markdown_matrix(confusion: dict[str, Any]) -> str:
    classes, matrix = confusion["classes"], confusion["matrix"]
    head = "| true \\ predicted | " + " | ".join(classes) + " |\n|---|" + "---|" * len(classes) + "\n"
    return head + "".join(f"| {c} | " + " | ".join(str(n) for n in row) + " |\n" for c, row in zip(classes, matrix))


def _summary_writer():
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        raise MissingDependencyError(f"Tracking with TensorBoard needs the tensorboard package: {INSTALL_HINT}") from None
    return SummaryWriter
