"""transferkit: transfer learning for image folders — train, embed, visualise, search.

The public API (everything else may change)::

    import transferkit as tk
    run = tk.train("data/", model="resnet18", strategy="auto", epochs=5)
    run.evaluate("data/"); run.predict(["img.jpg"])
    extractor = tk.FeatureExtractor(run.model); emb = extractor.extract(images)
    searcher = tk.SemanticSearch(embeddings, labels); idx, sims = searcher.search(q, top_k=5)

Heavy submodules are imported on first attribute access so that ``import transferkit``
(and ``transferkit --help``) stays fast.
"""

from __future__ import annotations

import importlib

__version__ = "0.1.0"

_EXPORTS = {
    # errors
    "TransferKitError": "errors", "ConfigError": "errors", "DataError": "errors", "WeightsUnavailableError": "errors",
    "RunError": "errors", "StoreError": "errors", "ModelMismatchError": "errors", "UnsafeFileError": "errors",
    "UnknownNameError": "errors", "MissingDependencyError": "errors", "CorruptStoreError": "errors", "ExportError": "errors",
    "DistributedError": "errors",
    # backbones
    "create_backbone": "backbones", "list_backbones": "backbones", "get_backbone_spec": "backbones",
    "Preprocessing": "backbones", "register_backbone": "backbones",
    # strategies
    "get_strategy": "strategies", "FeatureExtraction": "strategies", "PartialFineTuning": "strategies",
    "FullFineTuning": "strategies", "choose_auto": "strategies", "Strategy": "strategies", "register_strategy": "strategies",
    "list_strategies": "strategies", "AutoDecision": "strategies",
    # data
    "discover": "data.folders", "load_image": "data.decode",
    # training and runs
    "train": "training.trainer", "TrainConfig": "training.config", "Run": "training.run", "load_run": "training.run",
    "compare": "training.compare", "launch_torchrun": "training.distributed", "TransferModel": "training.model",
    # embeddings, store, search, visualisation, pipeline
    "FeatureExtractor": "embed.feature_extractor", "Extractor": "embed.extractor", "embed_folder": "embed.local", "embed_folder_ray": "distributed.ray_embed",
    "EmbeddingStore": "store.store", "describe_model": "store.store",
    "cosine_similarity": "store.search", "SemanticSearch": "store.search", "build_index": "store.index", "search_eval": "store.evaluate",
    "search_store": "store.query", "refresh_store": "store.latest", "predict_store": "training.store_predictions",
    "project_store": "viz", "sample_stratified": "viz", "StoreMap": "viz",
    "project": "viz", "plot_png": "viz", "plot_html": "viz", "Projection": "viz", "check_projection_method": "viz",
    "lr_find": "training.lr_find", "LRFindResult": "training.lr_find",
    "pipeline": "workflow", "PipelineResult": "workflow",
    "find_duplicates": "curate.duplicates", "DuplicateReport": "curate.duplicates",
    "find_label_issues": "curate.label_issues", "LabelIssueReport": "curate.label_issues",
    "find_outliers": "curate.outliers", "OutlierReport": "curate.outliers",
    "export_model": "export", "ExportResult": "export", "ExportMetadata": "export", "read_export_metadata": "export",
    # diagnostics
    "system_report": "doctor",
    # progress events
    "Event": "events", "ConsoleRenderer": "events", "Settings": "config",
}

__all__ = ["__version__", *_EXPORTS]


def __getattr__(name: str):
    if name in _EXPORTS:
        module = importlib.import_module(f".{_EXPORTS[name]}", __name__)
        value = getattr(module, name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'transferkit' has no attribute {name!r}")


def __dir__():
    return sorted(__all__)
