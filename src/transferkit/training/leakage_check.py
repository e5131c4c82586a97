"""The run's leakage check: val and test images that duplicate training images, warned once and recorded.

With cached frozen features (feature extraction on the fast path) the check reuses them
and the content digests taken while the files were read for them; the test split, which
training does not read, gets its features once here. A run without cached features (images
through a fine-tuned model) digests the files instead and checks exact copies only; ``pipeline``
then adds the near check from its store (:func:`pipeline_leakage`).
"""

from __future__ import annotations

from typing import Any

from ..curate.leakage import find_leakage, leakage_record, leakage_warning, store_leakage


def run_leakage(trainer: Any) -> dict[str, Any]:
    """The ``leakage`` record of ``trainer``'s run (see :func:`~transferkit.curate.leakage.leakage_record`), warned about once."""
    splits = trainer.splits
    # only the fast path's features: a fine-tuning run's head features were dropped, and its backbone has moved since
    cached = trainer.cached
    train = [str(p) for p in splits.train.paths]
    reports = {}
    if cached is not None and cached.train_index:
        fp = cached.fingerprints
        train_paths = [train[i] for i in cached.train_index]
        train_digests = [fp.get("train", {}).get(i, "") for i in cached.train_index]
        train_feats = cached.train.float().cpu().numpy()
        val = [str(p) for p in splits.val.paths]
        reports["val"] = find_leakage(train_paths=train_paths, eval_paths=[val[i] for i in cached.val_index],
                                      train_digests=train_digests, eval_digests=[fp.get("val", {}).get(i, "") for i in cached.val_index],
                                      train_features=train_feats, eval_features=cached.val.float().cpu().numpy())
        if splits.test is not None and len(splits.test):
            fb = trainer.features.test_features()
            test = [str(p) for p in splits.test.paths]
            idx = fb.indices.tolist()
            reports["test"] = find_leakage(train_paths=train_paths, eval_paths=[test[i] for i in idx],
                                           train_digests=train_digests, eval_digests=[fb.fingerprints.get(i, "") for i in idx],
                                           train_features=train_feats, eval_features=fb.features.numpy())
        record = leakage_record(reports, checked="exact+near")
    else:
        train_digests = _digests(train)
        for name, images in (("val", splits.val), ("test", splits.test)):
            if images is not None and len(images):
                paths = [str(p) for p in images.paths]
                reports[name] = find_leakage(train_paths=train, eval_paths=paths, train_digests=train_digests,
                                             eval_digests=_digests(paths))
        record = leakage_record(reports, checked="exact", note="no cached features in this run: exact copies only "
                                "(`transferkit pipeline` adds near copies from its store)")
    _warn(trainer.reporter, record)
    return record


def pipeline_leakage(metrics_path, store, reporter) -> dict[str, Any] | None:
    """Add the near check to a run whose training checked exact copies only, from the pipeline's store; warn about what is new.

    Returns the new record (also written to ``metrics_path``), or None when training already checked near copies.
    """
    import json

    from .._io import write_json_atomic

    metrics = json.loads(open(metrics_path, encoding="utf-8").read())
    old = metrics.get("leakage") or {}
    if old.get("checked") != "exact":
        return None
    record = leakage_record(store_leakage(store), checked="exact+near", note="near copies from the pipeline's store "
                            "(the trained model's embeddings)")
    metrics["leakage"] = record
    write_json_atomic(metrics_path, metrics)
    if record["num_leaked"] > old.get("num_leaked", 0):  # training warned about the exact copies already
        _warn(reporter, record)
    return record


def _warn(reporter, record: dict[str, Any]) -> None:
    per_split = {k: v for k, v in record.items() if isinstance(v, dict)}
    msg = leakage_warning(per_split)
    if msg and reporter is not None:
        reporter.warning(msg, num_leaked=record["num_leaked"])


def _digests(paths: list[str]) -> list[str]:
    from .._hashing import file_digest

    out = []
    for p in paths:
        try:
            out.append(file_digest(p))
        except OSError:  # unreadable files are the loader's to report
            out.append("")
    return out
