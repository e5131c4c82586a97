"""Experiment tracking of training runs: TensorBoard event files or an MLflow tracking store (optional extras).

``tk.train(data, tracker="mlflow")`` (or ``transferkit train DATA --tracker mlflow``) logs the run's
parameters, per-epoch metrics and learning rates, final metrics, confusion matrix and model. The
libraries are imported only when a tracker is built, never by ``import transferkit``.
"""

from __future__ import annotations

from pathlib import Path

from ..errors import ConfigError, unknown_name
from .base import TRACKING_FILE, Tracker, flat_values, flatten_params
from .mlflow_tracker import MLflowTracker
from .tensorboard_tracker import TensorBoardTracker

#: The ``tracker`` option's values.
TRACKERS = ("none", "tensorboard", "mlflow")
_CLASSES: dict[str, type[Tracker]] = {"none": Tracker, "tensorboard": TensorBoardTracker, "mlflow": MLflowTracker}

__all__ = ["TRACKERS", "TRACKING_FILE", "MLflowTracker", "TensorBoardTracker", "Tracker", "flat_values", "flatten_params",
           "make_tracker", "open_tracker", "validate_tracker"]


def validate_tracker(name: str, uri: str | None = None, experiment: str = "transferkit") -> None:
    """Check the ``tracker``, ``tracker_uri`` and ``experiment`` options (no library is imported).

    Raises:
        UnknownNameError: an unknown tracker (with close matches). ConfigError: an empty experiment or URI, or
            a URI without a tracker.
    """
    if name not in TRACKERS:
        raise unknown_name("tracker", name, TRACKERS)
    if not isinstance(experiment, str) or not experiment.strip():
        raise ConfigError(f"`experiment` must be a non-empty name; got {experiment!r}.")
    if uri is not None and (not isinstance(uri, str) or not uri.strip()):
        raise ConfigError(f"`tracker_uri` must be a non-empty URI or folder (or None for the default); got {uri!r}.")
    if uri is not None and name == "none":
        raise ConfigError(f"`tracker_uri` {uri!r} is set but no tracker is: pass `tracker` tensorboard or mlflow.")


def make_tracker(name: str = "none", *, uri: str | None = None, experiment: str = "transferkit") -> Tracker:
    """The tracker ``name`` names (``none``: one that logs nothing), not yet opened.

    Raises:
        UnknownNameError / ConfigError: see :func:`validate_tracker`.
        MissingDependencyError: the tracker's extra is not installed (the message gives the pip command).
    """
    validate_tracker(name, uri, experiment)
    return _CLASSES[name](uri=uri, experiment=experiment)


def open_tracker(config, run_dir: str | Path, *, reporter=None) -> Tracker:
    """The tracker of a :class:`~transferkit.TrainConfig` (its ``tracker``, ``tracker_uri``, ``experiment``), opened for
    the run in ``run_dir``: a bad location or a missing extra fails here, before any training."""
    tracker = make_tracker(config.tracker, uri=config.tracker_uri, experiment=config.experiment)
    tracker.open(run_dir, reporter=reporter)
    return tracker
