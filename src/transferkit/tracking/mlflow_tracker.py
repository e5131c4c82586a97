"""MLflow tracking: a training run's parameters, epochs, final metrics and files in an MLflow tracking store."""

from __future__ import annotations

import re
import time
from pathlib import Path
from typing import Any

from .. import __version__
from ..errors import ConfigError, MissingDependencyError, TransferKitError
from .base import Tracker, flatten_params

INSTALL_HINT = "pip install 'transferkit[mlflow]'"
#: The store beside the run directory when no URI is given: one database for every run of that folder.
DEFAULT_DB = "mlruns.db"
#: Where a SQLite store's artefacts go, beside the database (MLflow's own default is ./mlruns under the working directory).
ARTIFACTS_DIR = "mlartifacts"
_DB_SCHEMES = ("sqlite", "postgresql", "mysql", "mssql")
_BATCH = 100  # MLflow takes at most 100 params per log_batch


class MLflowTracker(Tracker):
    """Logs a run to MLflow through ``MlflowClient`` (no global active run; needs the ``mlflow`` extra).

    The run (named after its folder, tagged with its path) gets the parameters (the config's fields, the
    strategy's description, ``auto``'s evidence, the parameter groups), a metric per ``history.csv``
    column per epoch (``train_loss``, ``val_accuracy``, ``lr_<group>``, ...), the final metrics
    (``best_val_accuracy``, ``macro_f1``, ...), and as artefacts ``metrics.json``, ``history.csv``,
    ``config.json``, the confusion matrix (``confusion_matrix.png`` and ``.json``) and the model
    (``model/model.safetensors``, ``model/model.json``). A resumed run continues the same MLflow run.

    Args:
        uri: a tracking URI: ``sqlite:///path/mlruns.db``, ``http(s)://server``, ...
            None: ``sqlite:///<run folder's parent>/mlruns.db``, artefacts in ``mlartifacts/`` beside it.
        experiment: the experiment's name (created when missing).

    Raises:
        MissingDependencyError: ``mlflow`` (or, for a database URI, ``sqlalchemy``/``alembic``) is not installed.
    """

    name = "mlflow"
    title = "MLflow"

    def __init__(self, *, uri: str | None = None, experiment: str = "transferkit"):
        super().__init__(uri=uri, experiment=experiment)
        self.tracking_uri: str | None = None
        self.experiment_id: str | None = None
        self.run_id: str | None = None
        self._client = None

    @staticmethod
    def _library():
        return _client_class()

    def _open(self) -> None:
        uri = self.uri or default_uri(self.run_dir)
        self.tracking_uri = uri
        scheme = uri.split(":", 1)[0].split("+", 1)[0].lower() if "://" in uri else ""
        if scheme in _DB_SCHEMES:
            try:
                import alembic  # noqa: F401
                import sqlalchemy  # noqa: F401
            except ImportError:
                raise MissingDependencyError(f"An MLflow {scheme} store needs sqlalchemy and alembic: {INSTALL_HINT}") from None
        db = sqlite_path(uri)
        try:
            if db is not None:
                db.parent.mkdir(parents=True, exist_ok=True)
            self._client = self._library()(tracking_uri=uri)
            exp = self._client.get_experiment_by_name(self.experiment)
            if exp is None:
                location = (db.parent / ARTIFACTS_DIR / _slug(self.experiment)).resolve().as_uri() if db is not None else None
                self.experiment_id = self._client.create_experiment(self.experiment, artifact_location=location)
            elif exp.lifecycle_stage == "deleted":
                raise ConfigError(f"MLflow experiment {self.experiment!r} is deleted in {uri}. Restore it (mlflow experiments "
                                  "restore) or choose another `experiment`.")
            else:
                self.experiment_id = exp.experiment_id
        except TransferKitError:
            raise
        except Exception as exc:  # MlflowException, OSError, a database error: the URI is unusable
            reason = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else type(exc).__name__
            raise ConfigError(f"Cannot open the MLflow tracking store {uri!r}: {reason}. Check `tracker_uri` "
                              "(e.g. sqlite:///runs/mlruns.db or http://localhost:5000).") from None
        if self.previous.get("tracking_uri") == uri and self.previous.get("run_id"):
            self.run_id = self.previous["run_id"]

    def _start(self, params: dict[str, Any], *, epoch: int) -> None:
        from mlflow.entities import Param

        c = self._client
        if self.run_id is not None:  # resuming a run tracked here: continue its MLflow run
            c.update_run(self.run_id, status="RUNNING")
            verb = "continuing"
        else:
            run = c.create_run(self.experiment_id, run_name=self.run_dir.name, tags={
                "transferkit.run_dir": str(self.run_dir.resolve()), "transferkit.version": __version__,
                "mlflow.source.name": "transferkit train"})
            self.run_id = run.info.run_id
            items = [Param(_key(k), v) for k, v in flatten_params(params).items()]
            for i in range(0, len(items), _BATCH):
                c.log_batch(self.run_id, params=items[i: i + _BATCH])
            verb = "run"
        self._record(tracking_uri=self.tracking_uri, experiment_id=self.experiment_id, run_id=self.run_id)
        view = f"mlflow ui --backend-store-uri {self.tracking_uri}" if "://" in self.tracking_uri else "mlflow ui"
        self.reporter.message(f"MLflow: {verb} {self.run_id} in experiment {self.experiment!r} at {self.tracking_uri} "
                              f"(view: {view})", tracker=self.name, run_id=self.run_id, tracking_uri=self.tracking_uri)

    def _log_epoch(self, step: int, metrics: dict[str, float]) -> None:
        self._log_metrics(metrics, step)

    def _finish(self, metrics: dict[str, float], confusion: dict[str, Any], files: dict[str, str], *, step: int) -> None:
        c = self._client
        self._log_metrics(metrics, step)
        c.log_dict(self.run_id, confusion, "confusion_matrix.json")
        for name, folder in files.items():
            c.log_artifact(self.run_id, str(self.run_dir / name), artifact_path=folder or None)

    def _close(self, status: str) -> None:
        if self.run_id is not None and self._client is not None:
            self._client.set_terminated(self.run_id, status=status)
            self._client = None  # closing twice is a no-op

    def _log_metrics(self, metrics: dict[str, float], step: int) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        self._client.log_batch(self.run_id, metrics=[Metric(_key(k), v, now, step) for k, v in metrics.items()])


def default_uri(run_dir: Path) -> str:
    """``sqlite:///<run_dir's parent>/mlruns.db`` (absolute), so every run of a folder shares one store."""
    return "sqlite:///" + (Path(run_dir).resolve().parent / DEFAULT_DB).as_posix()


def sqlite_path(uri: str) -> Path | None:
    """The database file of a ``sqlite:///`` URI, or None for any other URI (and an in-memory SQLite one)."""
    if not uri.lower().startswith("sqlite:///") or uri[len("sqlite:///"):] in ("", ":memory:"):
        return None
    return Path(uri[len("sqlite:///"):].split("?", 1)[0])


def _key(name: str) -> str:
    return re.sub(r"[^\w./\- ]", "_", name)[:250]  # MLflow's allowed characters and length of a key


def _slug(name: str) -> str:
    return re.sub(r"[^\w.\-]+", "_", name).strip("_") or "experiment"


def _client_class():
    try:
        from mlflow.tracking import MlflowClient
    except ImportError:
        raise MissingDependencyError(f"Tracking with MLflow needs the mlflow package: {INSTALL_HINT}") from None
    return MlflowClient
