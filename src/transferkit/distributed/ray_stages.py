"""The stages of a Ray embedding job, as Ray Data runs them on the workers: decode -> embed -> write.

Each is a plain function or class over numpy batches (``{column: array}``), so the local
stages do the work: :func:`~transferkit.embed.stages.file_dataset` decodes exactly as the local
runner does, the :class:`EmbedActor` rebuilds the extractor from its recipe once per actor,
and :func:`write_batch` turns the vectors into uncommitted Lance fragments.
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np

#: Per-file columns passed through from the plan to the rows written.
ROW_COLUMNS = ("id", "path", "relpath", "label", "split")
#: What the decoder learns about each file (the store's record of it).
RECORD_COLUMNS = ("fingerprint", "size", "mtime", "width", "height")


def decode_batch(batch: dict[str, np.ndarray], *, preprocessing: dict[str, Any], exact: bool,
                 max_pixels: int | None) -> dict[str, np.ndarray]:
    """Read and decode a batch of files to uint8 crops (zeros, ``ok`` false and a ``reason`` for unreadable ones)."""
    from ..backbones import Preprocessing
    from ..data.datasets import collate
    from ..embed.stages import file_dataset

    pre = Preprocessing.from_dict(preprocessing)
    paths = [str(p) for p in batch["path"]]
    dataset = file_dataset(paths, pre, exact=exact, max_pixels=max_pixels)
    x, records, indices, bad = collate([dataset[i] for i in range(len(paths))])
    n, size = len(paths), pre.input_size
    images = np.zeros((n, size, size, 3), dtype=np.uint8) if x is None else np.zeros((n, *x.shape[1:]), dtype=np.uint8)
    out: dict[str, Any] = {name: batch[name] for name in ROW_COLUMNS}
    out.update({name: np.zeros(n, dtype=np.int64) for name in RECORD_COLUMNS})
    out["fingerprint"] = np.full(n, "", dtype=object)
    out["ok"] = np.zeros(n, dtype=bool)
    out["reason"] = np.full(n, "", dtype=object)
    if x is not None:
        images[indices] = x
        out["ok"][indices] = True
        for i, record in zip(indices, records):
            for name in RECORD_COLUMNS:
                out[name][i] = record[name]
    for i, reason in bad:
        out["reason"][i] = reason
    out["image"] = images
    return out


class EmbedActor:
    """Holds one extractor, rebuilt from its recipe, and embeds decoded batches (a Ray Data actor).

    The backend and precision are decided on the actor's first batch, with the fidelity check,
    as the local runner decides them; every row carries the actor's decision, which the driver
    checks is the same everywhere before it commits.
    """

    def __init__(self, recipe: dict[str, Any], *, expected_items: int):
        from ..embed.extractor import Extractor

        self.extractor = Extractor.from_recipe(recipe)
        # the policy picks the backend from the job's size, as the local runner's iter_files does
        self.extractor._expected_items = int(expected_items)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        from ..embed.stages import encode

        ok = np.asarray(batch["ok"], dtype=bool)
        n = len(ok)
        vectors = np.zeros((n, self.extractor.dim), dtype=np.float32)
        if ok.any():
            x = batch["image"][ok]
            # planar memory seen as (B, H, W, C), the layout the local collate hands the model
            x = np.ascontiguousarray(x.transpose(0, 3, 1, 2)).transpose(0, 2, 3, 1)
            out = next(encode(self.extractor, [(x, (list(range(len(x))), None, []))]))
            vectors[ok] = out["vectors"]
        result = {k: v for k, v in batch.items() if k != "image"}
        result["vector"] = vectors
        result["inference"] = np.full(n, json.dumps(self.extractor.inference_info, sort_keys=True, default=str), dtype=object)
        return result


def write_batch(batch: dict[str, np.ndarray], *, uri: str, dim: int, storage_version: str | None,
                storage_options: dict[str, str] | None = None) -> dict[str, np.ndarray]:
    """Write the readable rows of a batch as uncommitted Lance fragments; per input row, what the driver needs.

    Returns columns ``id``, ``path``, ``ok``, ``reason``, ``inference`` and ``fragments`` (the JSON list of
    the fragments written, on the first row only, ``""`` elsewhere).
    """
    from .lance_fragments import write_fragments

    ok = np.asarray(batch["ok"], dtype=bool)
    columns = {name: [v.item() if hasattr(v, "item") else v for v in np.asarray(batch[name])[ok]]
               for name in (*ROW_COLUMNS, *RECORD_COLUMNS)}
    vectors = np.asarray(batch["vector"], dtype=np.float32).reshape(len(ok), dim)[ok]
    frags = write_fragments(uri, columns, vectors, dim=dim, storage_version=storage_version, storage_options=storage_options)
    n = len(ok)
    fragments = np.full(n, "", dtype=object)
    if n:
        fragments[0] = json.dumps(frags)
    return {"id": batch["id"], "path": batch["path"], "ok": ok, "reason": batch["reason"], "inference": batch["inference"], "fragments": fragments}
