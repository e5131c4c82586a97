"""An index for stores bigger than RAM: IVF-PQ trained on a sample, filled by streaming, re-ranked exactly.

No step holds the store's vectors: training reads a sample of rows, the vectors are added in
chunks streamed from the table, and a search re-ranks the index's candidates with their exact
vectors, read back from the store by row id. The index keeps 8-bit PQ codes of dim / 8 bytes
(512-d: 64 bytes a vector, 1/32 of the float32 matrix) and Lance row ids, so a search needs
neither the store's vectors nor its id column in memory.

:func:`~transferkit.build_index` uses it (``kind="auto"``) once the float32 matrix would exceed
:data:`STREAMED_MIN_BYTES`, or when asked for ``kind="ivfpq"``.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np

from .._io import atomic_path, write_json_atomic
from ._faiss import load as _faiss
from ._lance import matrix, table_errors, where_clause
from .search import exact_topk

#: ``kind="auto"`` streams (IVF-PQ) once the float32 vector matrix would take this many bytes (~2M x 512).
STREAMED_MIN_BYTES = 4 << 30
KIND = "faiss-ivf-pq-ip-streamed"
#: Rows read from the table per chunk while adding and scanning (64k x 512 floats = 128 MiB).
CHUNK_ROWS = 65_536
#: A search re-ranks this many index candidates per requested result (at least 100): 10M x 512 clustered, nprobe
#: 768, recall@10 0.948 re-ranking 200, 0.963 at 300, 0.965 at 500 (BENCHMARKS.md "streamed IVF-PQ").
RERANK_FACTOR = 30
#: Beam of the HNSW coarse quantizer (its default, 16, misassigns vectors: 400k x 512 clustered, recall@10 after
#: re-ranking 0.953 at any nprobe against 0.995 at 128; BENCHMARKS.md "streamed IVF-PQ").
QUANTIZER_EF = 128
NPROBES = (1, 2, 4, 8, 12, 16, 24, 32, 48, 64, 96, 128, 192, 256, 384, 512, 768, 1024, 1536, 2048)
META_COLUMNS = ["id", "path", "relpath", "label", "split"]


class StreamedIndex:
    """A loaded IVF-PQ index whose faiss ids are the store's Lance row ids.

    Attributes:
        index: ``faiss.IndexIVFPQ`` (inner product).
        info: ``kind``, ``nlist``, ``pq_bytes``, ``nprobe``, ``rerank``, ``recall_at_10``, ``store_version``, ...
    """

    streamed = True

    def __init__(self, index, info: dict[str, Any]):
        self.index = index
        self.info = info

    def search_store(self, store: Any, queries: np.ndarray, k: int, *, columns: list[str] | None = None):
        """Exact top-``k`` among the index's candidates: ``(row_ids (Q, k), scores (Q, k), rows)``.

        ``rows`` maps a row id to its ``columns`` (default: id, path, relpath, label, split); ``-1``
        pads a query with fewer than ``k`` candidates.
        """
        set_nprobe(self.index, int(self.info["nprobe"]))
        queries = np.ascontiguousarray(queries, dtype=np.float32)
        want = max(k * int(self.info.get("rerank", RERANK_FACTOR)), 100)
        _, cand = self.index.search(queries, min(want, self.index.ntotal))
        return rerank(store, queries, cand, k, columns=META_COLUMNS if columns is None else columns)

    def search_rows(self, store: Any, q: np.ndarray, want: int, *, exact: bool = False, label: str | None = None,
                    split: str | None = None) -> list[tuple[float, dict[str, Any]]]:
        """``[(score, row)]`` best first for one normalised query: through the index, or (``exact``, a
        label or split filter) by a chunked exact scan of the table."""
        where = where_clause(None, label, split)
        if exact or where:
            ids, scores = streamed_topk(store, q[None, :], want, where=where)
            rows = rows_by_id(store, ids, META_COLUMNS)
        else:
            ids, scores, rows = self.search_store(store, q[None, :], want)
        return [(float(s), rows[int(i)]) for i, s in zip(ids[0], scores[0]) if i >= 0 and int(i) in rows]


def set_nprobe(index, nprobe: int) -> None:
    """Probe ``nprobe`` lists, and let an HNSW coarse quantizer search at least that wide a beam."""
    faiss = _faiss()
    ivf = faiss.extract_index_ivf(index)
    ivf.nprobe = nprobe
    quantizer = faiss.downcast_index(ivf.quantizer)
    if hasattr(quantizer, "hnsw"):
        quantizer.hnsw.efSearch = max(QUANTIZER_EF, nprobe)


@table_errors("read")
def rows_by_id(store: Any, row_ids: np.ndarray, columns: list[str]) -> dict[int, dict[str, Any]]:
    """``{row_id: {column: value}}`` for the given Lance row ids (``vector`` as a float32 array)."""
    wanted = sorted({int(r) for r in np.asarray(row_ids).ravel() if r >= 0})
    if not wanted:
        return {}
    tbl = store.table.take_row_ids(wanted).select(list(columns)).with_row_id().to_arrow()
    out: dict[int, dict[str, Any]] = {}
    vecs = matrix(tbl.column("vector"), store.dim) if "vector" in columns else None
    plain = [c for c in columns if c != "vector"]
    cols = {c: tbl.column(c).to_pylist() for c in plain}
    for i, rid in enumerate(tbl.column("_rowid").to_pylist()):
        row = {c: cols[c][i] for c in plain}
        if vecs is not None:
            row["vector"] = vecs[i]
        out[int(rid)] = row
    return out


def rerank(store: Any, queries: np.ndarray, cand: np.ndarray, k: int, *, columns: list[str]):
    """Re-score each query's candidate row ids with their exact vectors; keep the best ``k``."""
    rows = rows_by_id(store, cand, ["vector", *[c for c in columns if c != "vector"]])
    out_i = np.full((len(queries), k), -1, dtype=np.int64)
    out_s = np.full((len(queries), k), -np.inf, dtype=np.float32)
    for q, ids in enumerate(cand):
        ids = np.asarray([i for i in ids.tolist() if i in rows], dtype=np.int64)
        if ids.size == 0:
            continue
        sims = np.stack([rows[i]["vector"] for i in ids.tolist()]) @ queries[q]
        order = np.lexsort((ids, -sims))[:k]
        out_i[q, : len(order)] = ids[order]
        out_s[q, : len(order)] = sims[order]
    if "vector" not in columns:
        for row in rows.values():
            del row["vector"]
    return out_i, out_s, rows


@table_errors("read")
def stream_vectors(store: Any, *, chunk_rows: int | None = None, where: str | None = None):
    """Yield ``(row_ids int64, vectors float32)`` chunks of the table (optionally filtered), never all of it."""
    for batch in _batches(store, chunk_rows or CHUNK_ROWS, where):
        if batch.num_rows:
            yield (batch.column("_rowid").to_numpy().astype(np.int64),
                   matrix(batch.column("vector"), store.dim))


def _batches(store: Any, chunk_rows: int, where: str | None):
    try:
        import lance  # noqa: F401  (pylance: the `[ray]` extra)
    except ImportError:
        q = store.table.search().select(["vector"]).with_row_id(True)
        return (q.where(where) if where else q).limit(max(len(store), 1)).to_batches(chunk_rows)
    # pylance reads one fragment at a time: a scan's peak is then about one fragment (a 400k x 512 store: 0.8 GiB
    # against 1.1 GiB through LanceDB's query, whose read-ahead grows with the table)
    return store.table.to_lance().scanner(columns=["vector"], with_row_id=True, filter=where or None,
                                          batch_size=chunk_rows, batch_readahead=1, fragment_readahead=1).to_batches()


def streamed_topk(store: Any, queries: np.ndarray, k: int, *, where: str | None = None,
                  chunk_rows: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Exact top-``k`` row ids and scores over the whole table, one chunk in memory at a time."""
    queries = np.ascontiguousarray(queries, dtype=np.float32)
    best_i = np.full((len(queries), 0), -1, dtype=np.int64)
    best_s = np.full((len(queries), 0), -np.inf, dtype=np.float32)
    for ids, x in stream_vectors(store, chunk_rows=chunk_rows, where=where):
        idx, sc = exact_topk(x, queries, min(k, len(x)))
        all_i = np.concatenate([best_i, ids[idx]], axis=1)
        all_s = np.concatenate([best_s, sc], axis=1)
        order = np.lexsort((all_i, -all_s), axis=1)[:, :k]
        best_i, best_s = np.take_along_axis(all_i, order, axis=1), np.take_along_axis(all_s, order, axis=1)
    return best_i, best_s


@table_errors("read")
def sample_rows(store: Any, n: int, size: int, rng: np.random.Generator, *, chunk_rows: int | None = None):
    """``(row_ids, vectors)`` of ``size`` rows drawn without replacement, read by offset in sorted chunks."""
    offsets = np.sort(rng.choice(n, size=min(size, n), replace=False))
    ids, vecs = [], []
    chunk_rows = chunk_rows or CHUNK_ROWS
    for start in range(0, len(offsets), chunk_rows):
        tbl = store.table.take_offsets(offsets[start:start + chunk_rows].tolist()).select(["vector"]).with_row_id().to_arrow()
        ids.append(tbl.column("_rowid").to_numpy().astype(np.int64))
        vecs.append(matrix(tbl.column("vector"), store.dim))
    return np.concatenate(ids), np.concatenate(vecs)


def build_streamed(store: Any, *, target_recall: float = 0.95, num_queries: int = 200, seed: int = 0,
                   nlist: int | None = None, task=None) -> tuple[Any, dict[str, Any]]:
    """Train an IVF-PQ index on a sample of ``store``, add every vector chunk by chunk, tune ``nprobe``.

    ``nprobe`` is the smallest whose leave-one-out recall@10 *after re-ranking*, on
    ``num_queries`` stored rows as queries, reaches ``target_recall``; the truth comes from an
    exact streamed scan.

    Returns:
        ``(faiss_index, info)``.
    """
    faiss = _faiss()
    n, dim = len(store), store.dim
    rng = np.random.default_rng(seed)
    t0 = time.perf_counter()
    # ~2 sqrt(N) lists, at most 8192 (10M: 6325, ~1600 codes a probe), each trained on 40 sampled rows.
    nlist = int(nlist or min(8192, max(16, round(2 * np.sqrt(n)))))
    nlist = max(1, min(nlist, n // 40))
    m = next(s for s in (dim // 8, dim // 4, dim // 2, dim) if s and dim % s == 0)
    # 8-bit codes need ~40 training rows per code (256 x 40); a smaller store gets fewer bits.
    nbits = min(8, int(np.log2(n / 39)))
    if nbits < 4:
        from ..errors import ConfigError

        raise ConfigError(f"The streamed IVF-PQ index needs at least {16 * 39} vectors; the store has {n}. "
                          "Use `kind='auto'` (an in-memory index) for a store this small.")
    # Above 1024 lists an HNSW over the centroids assigns each added vector: a flat assignment of
    # 10M x 512-d vectors to 6325 centroids is ~7e13 multiply-adds, hours on 2 cores.
    quantizer = faiss.IndexHNSWFlat(dim, 32, faiss.METRIC_INNER_PRODUCT) if nlist >= 1024 else faiss.IndexFlatIP(dim)
    index = faiss.IndexIVFPQ(quantizer, dim, nlist, m, nbits, faiss.METRIC_INNER_PRODUCT)
    index.cp.niter = 10
    index.cp.spherical = True  # the vectors are unit length; so are the centroids
    _, train = sample_rows(store, n, max(40 * nlist, 40 * 2**nbits), rng)
    index.train(train)
    del train
    set_nprobe(index, 1)  # the assignment of added vectors searches the quantizer at QUANTIZER_EF
    train_s = time.perf_counter() - t0
    for ids, x in stream_vectors(store):
        index.add_with_ids(x, ids)
        if task is not None:
            task.advance(len(ids))
    build_s = time.perf_counter() - t0
    info: dict[str, Any] = {"kind": KIND, "nlist": nlist, "pq_bytes": m * nbits // 8, "pq_bits": nbits, "rerank": RERANK_FACTOR,
                            "train_seconds": round(train_s, 3)}
    q_ids, queries = sample_rows(store, n, num_queries, rng)
    k = min(10, n - 1) if n > 1 else 1
    truth = _drop_self(streamed_topk(store, queries, k + 1)[0], q_ids, k)
    loaded = StreamedIndex(index, info)
    chosen = None
    for nprobe in [p for p in NPROBES if p <= nlist] or [nlist]:
        info["nprobe"] = nprobe
        t1 = time.perf_counter()
        found, _, _ = loaded.search_store(store, queries, k + 1, columns=["id"])
        query_ms = (time.perf_counter() - t1) / len(queries) * 1e3
        recall = float(np.mean([len(set(a.tolist()) & set(b.tolist())) / k
                                for a, b in zip(_drop_self(found, q_ids, k), truth)]))
        chosen = (nprobe, recall, query_ms)
        if recall >= target_recall:
            break
    nprobe, recall, query_ms = chosen
    info.update({"nprobe": nprobe, "target_recall": target_recall, "num_vectors": int(index.ntotal),
                 "recall_at_10": round(recall, 4), "recall_queries": int(len(queries)), "build_seconds": round(build_s, 3),
                 "query_ms": round(query_ms, 4)})
    return index, info


def _drop_self(found: np.ndarray, own: np.ndarray, k: int) -> np.ndarray:
    out = np.full((len(found), k), -1, dtype=np.int64)
    for r, (row, q) in enumerate(zip(found, own)):
        kept = [int(i) for i in row if i != q and i >= 0][:k]
        out[r, : len(kept)] = kept
    return out


def save_streamed(store: Any, index, info: dict[str, Any], *, index_file: str, meta_file: str, ids_file: str) -> None:
    """Write the index, then its info (last: it names the store version the index belongs to)."""
    path = Path(store.path)
    with atomic_path(path / index_file) as tmp:
        _faiss().write_index(index, str(tmp))
    (path / ids_file).unlink(missing_ok=True)  # the faiss ids are the row ids; an older index's id list would mislead
    write_json_atomic(path / meta_file, info)


def load_streamed(path: Path, info: dict[str, Any], store: Any) -> StreamedIndex | None:
    """Memory-map the saved index (the inverted lists stay on disk until probed); ``None`` if it does not match."""
    faiss = _faiss()
    index = faiss.read_index(str(path), faiss.IO_FLAG_MMAP | faiss.IO_FLAG_READ_ONLY)
    if index.d != store.dim:
        return None
    return StreamedIndex(index, info)
