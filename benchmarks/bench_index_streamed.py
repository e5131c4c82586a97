"""Issue 21's index bigger than RAM: the streamed IVF-PQ over N x D clustered vectors.

Writes a store of synthetic embeddings (once; reused when ``--work`` already has it), then in
separate processes, so each peak RSS is its own: ``build_index(kind="auto")`` (which streams
above 4 GiB of vectors), and a query run that measures recall@10 after re-ranking and
queries/s against an exact streamed scan, on held-out queries from the same distribution.

The vectors are shaped like real embeddings rather than uniform noise: K cluster centres on
the sphere, each vector a centre plus anisotropic noise whose per-direction scale decays like
an embedding's PCA spectrum (a random rotation of a 1/sqrt(rank) profile), normalised.

Usage:
    .venv/bin/python benchmarks/bench_index_streamed.py --n 10000000 --dim 512 --work /tmp/tk/big
    .venv/bin/python benchmarks/bench_index_streamed.py --n 1000000 --dim 512      # smaller, ~5 min
"""

from __future__ import annotations

import argparse
import json
import subprocess
import tempfile
import time
from pathlib import Path

import numpy as np
from _common import PYTHON, machine

CHUNK = 250_000


class Generator:
    """Chunks of clustered unit vectors; the same seed gives the same distribution for queries."""

    def __init__(self, dim: int, clusters: int, seed: int = 0):
        rng = np.random.default_rng(seed)
        self.centers = rng.standard_normal((clusters, dim)).astype(np.float32)
        self.centers /= np.linalg.norm(self.centers, axis=1, keepdims=True)
        q, _ = np.linalg.qr(rng.standard_normal((dim, dim)))
        spectrum = 1.0 / np.sqrt(np.arange(1, dim + 1))
        # Noise of norm ~0.75 against unit centres: a vector's cosine to its centre is ~0.8.
        self.mix = (spectrum[:, None] * q.T * (0.75 / np.sqrt((spectrum ** 2).sum()))).astype(np.float32)

    def chunk(self, n: int, rng: np.random.Generator) -> np.ndarray:
        x = self.centers[rng.integers(0, len(self.centers), n)]
        x += rng.standard_normal((n, self.mix.shape[0]), dtype=np.float32) @ self.mix
        x /= np.linalg.norm(x, axis=1, keepdims=True)
        return x


def write_store(path: Path, n: int, dim: int, clusters: int) -> float:
    import pyarrow as pa

    import transferkit as tk
    from transferkit.store import _lance

    t0 = time.perf_counter()
    store = tk.EmbeddingStore.create(path, model_id={"backbone": "synthetic-clustered", "dim": dim})
    gen, rng = Generator(dim, clusters), np.random.default_rng(1)
    schema = _lance.schema(dim)
    for start in range(0, n, CHUNK):
        m = min(CHUNK, n - start)
        x = gen.chunk(m, rng)
        cols = {c: pa.array([_lance.DEFAULTS[c]] * m, type=schema.field(c).type) for c in _lance.COLUMNS[:-1]}
        cols["id"] = pa.array([f"v{i}" for i in range(start, start + m)])
        cols["vector"] = pa.FixedSizeListArray.from_arrays(pa.array(x.ravel(), type=pa.float32()), dim)
        # A bulk append: upsert's merge on id would re-read the growing table for every chunk.
        store.table.add(pa.table(cols, schema=schema))
        print(f"  wrote {start + m:,} rows ({time.perf_counter() - t0:.0f}s)", flush=True)
    return time.perf_counter() - t0


BUILD = """
import json, resource, sys, time
import transferkit as tk
store = tk.EmbeddingStore.open(sys.argv[1])
t0 = time.perf_counter()
info = tk.build_index(store, kind=sys.argv[2], quiet=True)
info["wall_seconds"] = time.perf_counter() - t0
info["peak_rss_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
print(json.dumps(info))
"""

QUERY = """
import json, resource, sys, time
import numpy as np
sys.path.insert(0, sys.argv[4])
from bench_index_streamed import Generator
import transferkit as tk
from transferkit.store import streamed
store = tk.EmbeddingStore.open(sys.argv[1])
nq, k = int(sys.argv[2]), 10
q = Generator(store.dim, int(sys.argv[3])).chunk(nq, np.random.default_rng(99))
ann = store.ann_index()
assert getattr(ann, "streamed", False), ann
t0 = time.perf_counter(); found, _, rows = ann.search_store(store, q, k, columns=["id"]); ann_s = time.perf_counter() - t0
t0 = time.perf_counter(); one = [store.search(v, k) for v in q[:20]]; single_s = (time.perf_counter() - t0) / 20
t0 = time.perf_counter(); truth, _ = streamed.streamed_topk(store, q, k); exact_s = time.perf_counter() - t0
recall = float(np.mean([len(set(a.tolist()) & set(b.tolist())) / k for a, b in zip(found, truth)]))
print(json.dumps({"queries": nq, "recall_at_10": recall, "ann_qps_batch": nq / ann_s, "ann_ms_single": single_s * 1e3,
                  "exact_qps_batch": nq / exact_s, "exact_seconds": exact_s,
                  "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""


def run(code: str, *args: str) -> dict:
    out = subprocess.run([PYTHON, "-c", code, *args], check=True, capture_output=True, text=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=10_000_000)
    ap.add_argument("--dim", type=int, default=512)
    ap.add_argument("--clusters", type=int, default=20_000)
    ap.add_argument("--queries", type=int, default=200)
    ap.add_argument("--kind", default="auto")
    ap.add_argument("--work", type=Path, default=None)
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()
    work = args.work or Path(tempfile.mkdtemp(prefix="tk-streamed-"))
    path = work / f"store-{args.n}x{args.dim}"
    print(machine(), flush=True)
    result: dict = {"n": args.n, "dim": args.dim, "clusters": args.clusters}
    done = work / f"store-{args.n}x{args.dim}.written"  # a store cut off mid-write is written again
    if not done.exists():
        import shutil

        shutil.rmtree(path, ignore_errors=True)
        result["write_seconds"] = write_store(path, args.n, args.dim, args.clusters)
        done.write_text(str(result["write_seconds"]))
    result["store_gib"] = sum(f.stat().st_size for f in path.rglob("*") if f.is_file() and "ann" not in f.name) / 2**30
    build = run(BUILD, str(path), args.kind)
    result["build"] = build
    result["index_mib"] = (path / "ann.faiss").stat().st_size / 2**20
    print(json.dumps(build), flush=True)
    result["query"] = run(QUERY, str(path), str(args.queries), str(args.clusters), str(Path(__file__).parent))
    print(json.dumps(result, indent=1), flush=True)
    if args.json:
        args.json.write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
