"""The tracker a training run reports to: its hooks, the record it leaves in the run directory, parameter flattening.

A tracker is a small object the trainer calls at four points of a run (in the spirit of
Lightning's loggers): :meth:`Tracker.open` before any work (so a bad URI or a missing extra
fails at once), :meth:`Tracker.start` with the run's parameters, :meth:`Tracker.log_epoch`
after each epoch and :meth:`Tracker.finish` with the final metrics and the run's files; and
:meth:`Tracker.close` with the run's status. The base class tracks nothing (``tracker="none"``).
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, ClassVar

from .._io import read_json_object, write_json_atomic
from ..errors import CorruptRunError
from ..events import Reporter

#: ``RUN_DIR/tracking.json``: where the run was tracked, so that resuming it continues the same tracked run.
TRACKING_FILE = "tracking.json"
#: The run's files a tracker stores as artefacts, in the folder (``""``: the root) it puts them in.
RUN_ARTIFACTS = {"metrics.json": "", "history.csv": "", "config.json": "", "confusion_matrix.png": "",
                 "model.safetensors": "model", "model.json": "model"}
#: Final metrics (``metrics.json`` keys) a tracker logs as numbers, under the name it logs them by.
FINAL_METRICS = {"val_accuracy": "best_val_accuracy", "val_loss": "best_val_loss", "macro_f1": "macro_f1",
                 "best_epoch": "best_epoch", "epochs_run": "epochs_run", "train_seconds": "train_seconds"}


class Tracker:
    """Receives a training run's parameters, per-epoch metrics, final metrics and files; this base class logs nothing.

    Subclasses implement the ``_open``/``_start``/``_log_epoch``/``_finish``/``_close`` methods. A failure
    while logging (after :meth:`open` succeeded) is reported once as a warning and stops the tracking, not
    the training: the run directory keeps every result either way. Use as a context manager: leaving the
    block closes the tracked run as ``FINISHED``, ``FAILED`` (an exception) or ``KILLED`` (Ctrl-C).

    Attributes:
        name: the ``tracker`` option that selects this class (``"mlflow"``).
        uri: where runs are tracked, as given (None: the tracker's default).
        experiment: the experiment the run belongs to.
        run_dir: the run directory, once opened.
    """

    name: ClassVar[str] = "none"
    title: ClassVar[str] = "no tracker"

    def __init__(self, *, uri: str | None = None, experiment: str = "transferkit"):
        self._library()  # a missing extra fails here, before any training
        self.uri, self.experiment = uri, experiment
        self.run_dir: Path | None = None
        self.reporter = Reporter()
        self.previous: dict[str, Any] = {}  # tracking.json of the run being resumed, if it was tracked here
        self._failed = False

    def __repr__(self) -> str:
        return f"{type(self).__name__}(uri={self.uri!r}, experiment={self.experiment!r})"

    # -- the hooks the trainer calls --------------------------------------------------------------
    def open(self, run_dir: str | Path, *, reporter: Reporter | None = None) -> None:
        """Connect for a run in ``run_dir`` (new, or resumed if ``tracking.json`` records this tracker).

        Raises:
            ConfigError: the tracking location cannot be used (bad URI, deleted experiment).
        """
        self.run_dir = Path(run_dir)
        self.reporter = reporter or Reporter()
        record = self.run_dir / TRACKING_FILE
        if record.exists():
            saved = read_json_object(record, error=CorruptRunError, what="tracking record",
                                     remedy=f"Delete {record} to track the rest of the run as a new tracked run.")
            self.previous = saved if saved.get("tracker") == self.name else {}
        self._open()

    def start(self, params: dict[str, Any], *, epoch: int = 0) -> None:
        """Begin the tracked run with the run's parameters (``model.json``'s: config, strategy, auto, parameter
        groups, classes), or continue it when the run resumes after ``epoch`` completed epochs."""
        self._call(self._start, params, epoch=epoch)

    def log_epoch(self, metrics: dict[str, Any], *, learning_rates: dict[str, float] | None = None) -> None:
        """Log an epoch's row of ``history.csv`` (``metrics["epoch"]`` is the step) and the learning rate of each
        optimizer parameter group during it (None: no optimizer stepped, e.g. a fitted head)."""
        numbers = {k: float(v) for k, v in metrics.items() if k != "epoch" and _is_number(v)}
        if learning_rates:
            numbers.update({f"lr_{name}": float(lr) for name, lr in learning_rates.items()})
        self._call(self._log_epoch, int(metrics["epoch"]), numbers)

    def finish(self, metrics: dict[str, Any]) -> None:
        """Log the final metrics (``metrics.json``), the confusion matrix and the run's files as artefacts."""
        numbers = {FINAL_METRICS[k]: float(metrics[k]) for k in FINAL_METRICS if _is_number(metrics.get(k))}
        head_fit = metrics.get("head_fit") or {}
        numbers.update({f"head_fit_{k}": float(v) for k, v in head_fit.items() if k.endswith("accuracy") and _is_number(v)})
        classes = list((metrics.get("per_class") or {}).keys())
        confusion = {"classes": classes, "matrix": metrics.get("confusion_matrix") or []}
        files = {name: folder for name, folder in RUN_ARTIFACTS.items() if self.run_dir and (self.run_dir / name).is_file()}
        self._call(self._finish, numbers, confusion, files, step=int(metrics.get("epochs_run") or 0))

    def close(self, status: str = "FINISHED") -> None:
        """End the tracked run with ``status`` (``FINISHED``, ``FAILED`` or ``KILLED``); safe to call twice.
        Tried even after a logging failure, so the tracked run does not stay ``RUNNING``."""
        self._call(self._close, status, always=True)

    def __enter__(self) -> Tracker:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        status = "FINISHED" if exc_type is None else "KILLED" if issubclass(exc_type, KeyboardInterrupt) else "FAILED"
        self.close(status)

    # -- what subclasses implement ----------------------------------------------------------------
    @staticmethod
    def _library():
        """The tracking library's entry point (imported here); raises MissingDependencyError without its extra."""
        return None

    def _open(self) -> None:
        pass

    def _start(self, params: dict[str, Any], *, epoch: int) -> None:
        pass

    def _log_epoch(self, step: int, metrics: dict[str, float]) -> None:
        pass

    def _finish(self, metrics: dict[str, float], confusion: dict[str, Any], files: dict[str, str], *, step: int) -> None:
        pass

    def _close(self, status: str) -> None:
        pass

    # -- helpers --------------------------------------------------------------------------------
    def _call(self, method, *args, always: bool = False, **kwargs) -> None:
        if self._failed and not always:
            return
        try:
            method(*args, **kwargs)
        except Exception as exc:  # the run directory has every result: a tracker's failure must not lose the training
            if self._failed:
                return  # warned already
            self._failed = True
            reason = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else type(exc).__name__
            self.reporter.warning(f"{self.title} logging failed ({type(exc).__name__}: {reason}); it stops for this run, "
                                  f"training goes on. Hint: every result is in {self.run_dir}.", tracker=self.name)

    def _record(self, **info: Any) -> None:
        """Write ``tracking.json``: this tracker's name and where the run is tracked."""
        write_json_atomic(self.run_dir / TRACKING_FILE, {"tracker": self.name, "experiment": self.experiment, **info})


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def flat_values(params: dict[str, Any]) -> dict[str, Any]:
    """``model.json``-style parameters as one flat dict: the config's fields by their own names, nested values as
    ``section.key`` (``strategy.name``, ``parameters.trainable``), and ``num_classes``."""
    flat: dict[str, Any] = {}

    def walk(prefix: str, value: Any) -> None:
        if isinstance(value, dict) and value:
            for k, v in value.items():
                walk(f"{prefix}.{k}" if prefix else str(k), v)
        else:
            flat[prefix] = value

    for section, value in params.items():
        walk("" if section == "config" else section, value)
    if isinstance(params.get("classes"), list):
        flat["num_classes"] = len(params["classes"])
    return flat


def flatten_params(params: dict[str, Any], *, max_length: int = 6000) -> dict[str, str]:
    """:func:`flat_values` as texts (lists as JSON), each cut to ``max_length`` characters (MLflow's limit)."""
    out = {}
    for key, value in flat_values(params).items():
        text = value if isinstance(value, str) else json.dumps(value, default=str) if isinstance(value, (list, tuple)) else str(value)
        out[key] = text if len(text) <= max_length else text[: max_length - 3] + "..."
    return out
