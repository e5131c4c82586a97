"""`transferkit serve` (issue 20): search latency with concurrent clients, server RSS, time to first map paint.

Everything runs against the real server: ``transferkit.server.create_app`` served by uvicorn in
a subprocess on ``127.0.0.1`` (a free port); every request goes to that address only, and every
loop is bounded by ``--seconds``.

1. By-id search (``GET /api/search?id=...&k=10``), ``--clients`` concurrent keep-alive clients
   (threads, one ``http.client`` connection each, random ids) for ``--seconds``: exact
   (``exact=1``) and ANN (``exact=0``, the store's index built by ``tk.build_index``; the
   ``X-Search`` header says which answered), over ``--n`` synthetic vectors shaped like real
   embeddings (L2-normalised points around 100 class centres, each class with its own
   16-dimensional spread plus isotropic noise; not uniform random), 512-d, written through the
   public API (``tk.EmbeddingStore.create`` + ``upsert``), their paths pointing at real JPEGs
   of the hymenoptera dataset so thumbnails work. Goal: p99 < 50 ms at 100k with 8 clients.
2. By-upload search (``POST /api/search``, multipart ``file``, a real photo) against the time of
   embedding that photo in-process with the same model (``tk.Extractor.from_store(...).embed_files``,
   warm, median): on a real store (``efficientnet_lite0``, its bundled weights) of ``--upload-images``
   photos from hymenoptera + flowers12, since the server must embed the query with the store's
   model. One client and ``--clients`` clients; the goal's ratio from 40 back-to-back pairs (embed
   in-process, then one upload search), so background load moves both alike. Goal: within 1.5x.
3. Server RSS (``VmRSS`` and ``VmHWM`` of the server process, from ``/proc/<pid>/status``) after the runs.
4. Time to first map paint in headless Chromium (the system ``/usr/bin/chromium``, driven by
   Playwright) for ``--n`` and ``--map-n`` points (the 1M store is 128-d, not 512-d: 1M x 512
   float32 is 2 GB of vectors and the map needs only the projection). If the page exposes
   ``window.transferkit`` with a drawn point count, the time from navigation until it equals the
   served count; also always the in-page ``fetch`` of ``/api/points?format=f32`` and its decode
   into typed arrays; the time until the page is interactive (the ids arrived: ``state.ready``);
   and the frames drawn per second while the camera zooms in and out (two 2 s transitions,
   counted by the plot's ``draw`` events). The first ``/api/points`` call of a store computes and caches its PCA
   projection; that (server-side) time is reported separately. Skipped with a message when
   Chromium or Playwright is missing, or with ``--no-browser``.

Usage:
    .venv/bin/python benchmarks/bench_serve.py                 # 100k by-id, 1,000-photo upload store, 100k + 1M map
    .venv/bin/python benchmarks/bench_serve.py --quick         # 10k rows, 5 s per run, 10k + 100k map
    .venv/bin/python benchmarks/bench_serve.py --n 300000 --clients 16 --seconds 30 --no-browser
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import random
import shutil
import socket
import statistics
import subprocess
import tempfile
import threading
import time
import uuid
from pathlib import Path

import numpy as np
from _common import DATASETS, PYTHON, ROOT, images_by_class, machine, subsample, table

HOST = "127.0.0.1"
CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")
SERVER_CODE = """
import sys, uvicorn
from transferkit.server import create_app
uvicorn.run(create_app(sys.argv[1]), host="127.0.0.1", port=int(sys.argv[2]), log_level="warning", access_log=False)
"""


# ---------------------------------------------------------------------------------------------- synthetic store
def clustered_chunks(n: int, dim: int, clusters: int, seed: int, chunk: int):
    """Yield ``(labels, vectors)`` chunks: L2-normalised points around ``clusters`` centres (see bench_search)."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(clusters, dim)).astype(np.float32)
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    rank = 16
    bases = (rng.normal(size=(clusters, rank, dim)) / np.sqrt(dim)).astype(np.float32)
    for s in range(0, n, chunk):
        m = min(chunk, n - s)
        lab = rng.integers(0, clusters, size=m)
        lat = rng.normal(size=(m, rank)).astype(np.float32) * 0.6
        x = centres[lab] + np.einsum("nr,nrd->nd", lat, bases[lab]) + rng.normal(size=(m, dim)).astype(np.float32) * (0.6 / np.sqrt(dim))
        yield lab, x / np.linalg.norm(x, axis=1, keepdims=True)


def synthetic_store(path: Path, n: int, dim: int, clusters: int = 100, seed: int = 0, chunk: int = 25_000) -> float:
    """A store of ``n`` synthetic rows written through the public API; returns the seconds it took."""
    import transferkit as tk

    root = (DATASETS / "hymenoptera").resolve()
    photos = sorted(p for p in root.rglob("*.jpg"))[:16]
    if not photos:
        raise SystemExit(f"no JPEGs under {root}: the synthetic rows point at real photos for thumbnails")
    t0 = time.perf_counter()
    store = tk.EmbeddingStore.create(path, model_id={"backbone": "synthetic", "weights": f"clustered-{clusters}", "dim": dim},
                                     source={}, extra={"data_root": str(root)})
    start = 0
    for lab, x in clustered_chunks(n, dim, clusters, seed, chunk):
        rows = []
        for j in range(len(lab)):
            i = start + j
            p = photos[i % len(photos)]
            rows.append({"id": f"s{i:07d}", "path": str(p), "relpath": str(p.relative_to(root)), "label": f"c{lab[j]:03d}",
                         "split": "train", "vector": x[j]})
        store.upsert(rows)
        start += len(lab)
    return time.perf_counter() - t0


def real_store(path: Path, data: Path, images: int) -> tuple[float, list[Path]]:
    """Copy ``images`` photos (hymenoptera + flowers12, classes kept) to ``data`` and embed them with efficientnet_lite0."""
    import transferkit as tk

    files: dict[str, list[Path]] = {}
    for ds in ("hymenoptera", "flowers12"):
        for cls, paths in images_by_class(ds).items():
            files.setdefault(f"{ds}_{cls}", []).extend(paths)
    files = subsample(files, images)
    copied = []
    for cls, paths in files.items():
        (data / cls).mkdir(parents=True, exist_ok=True)
        for i, p in enumerate(paths):
            dest = data / cls / f"{i:05d}{p.suffix.lower()}"
            shutil.copyfile(p, dest)
            copied.append(dest)
    t0 = time.perf_counter()
    tk.embed_folder(tk.Extractor.from_backbone("efficientnet_lite0"), data, path, quiet=True)
    return time.perf_counter() - t0, copied


# ---------------------------------------------------------------------------------------------- server
def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


class Server:
    """``create_app(store)`` under uvicorn in a subprocess; ``with Server(store) as srv: srv.port``."""

    def __init__(self, store: Path, timeout: float = 300.0):
        self.store, self.timeout = store, timeout
        self.port = free_port()
        self.log = tempfile.TemporaryFile()

    def __enter__(self) -> Server:
        self.proc = subprocess.Popen([PYTHON, "-c", SERVER_CODE, str(self.store), str(self.port)], cwd=ROOT,
                                     stdout=self.log, stderr=subprocess.STDOUT)
        t0 = time.perf_counter()
        while time.perf_counter() - t0 < self.timeout:
            if self.proc.poll() is not None:
                break
            try:
                status, _, body = request(self.port, "GET", "/api/info", timeout=60)
                if status == 200:
                    self.info = json.loads(body)
                    self.start_seconds = time.perf_counter() - t0
                    return self
            except OSError:
                pass
            time.sleep(0.2)
        self.stop()
        self.log.seek(0)
        raise RuntimeError(f"the server did not answer /api/info within {self.timeout:.0f} s:\n"
                           f"{self.log.read().decode(errors='replace')[-3000:]}")

    def rss(self) -> dict[str, float]:
        out = {}
        for line in open(f"/proc/{self.proc.pid}/status"):
            key = line.split(":")[0]
            if key in ("VmRSS", "VmHWM"):
                out[key] = int(line.split()[1]) / 1024  # kB -> MiB
        return out

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)

    def __exit__(self, *exc) -> None:
        self.stop()


def request(port: int, method: str, url: str, body: bytes | None = None, headers: dict | None = None,
            timeout: float = 60, conn: http.client.HTTPConnection | None = None):
    """One request to 127.0.0.1:port; returns (status, headers, body)."""
    own = conn is None
    conn = conn or http.client.HTTPConnection(HOST, port, timeout=timeout)
    try:
        conn.request(method, url, body=body, headers=headers or {})
        resp = conn.getresponse()
        data = resp.read()
        return resp.status, resp.headers, data
    finally:
        if own:
            conn.close()


def multipart(photo: Path, fields: dict[str, str]) -> tuple[bytes, dict[str, str]]:
    boundary = uuid.uuid4().hex
    parts = []
    for k, v in fields.items():
        parts.append(f'--{boundary}\r\nContent-Disposition: form-data; name="{k}"\r\n\r\n{v}\r\n'.encode())
    parts.append(f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="{photo.name}"\r\n'
                 f'Content-Type: image/jpeg\r\n\r\n'.encode() + photo.read_bytes() + b"\r\n")
    parts.append(f"--{boundary}--\r\n".encode())
    return b"".join(parts), {"Content-Type": f"multipart/form-data; boundary={boundary}"}


def load(port: int, make_request, clients: int, seconds: float, warmup: int = 3) -> dict:
    """``clients`` threads, each on its own keep-alive connection, calling ``make_request(rng)`` ->
    (method, url, body, headers) until ``seconds`` pass. Returns latency percentiles (ms) and counts."""
    lat: list[list[float]] = [[] for _ in range(clients)]
    errors: list[str] = []
    answered: dict[str, int] = {}
    lock = threading.Lock()
    state: dict[str, float] = {}
    # The action runs once, when every worker is warm, before any is released: one deadline for all.
    barrier = threading.Barrier(clients + 1, action=lambda: state.update(start=time.perf_counter(),
                                                                       deadline=time.perf_counter() + seconds))

    def worker(w: int) -> None:
        rng = random.Random(w)
        conn = http.client.HTTPConnection(HOST, port, timeout=120)
        try:
            for _ in range(warmup):
                request(port, *make_request(rng), conn=conn)
            barrier.wait()
            deadline = state["deadline"]
            while time.perf_counter() < deadline:
                args = make_request(rng)
                t0 = time.perf_counter()
                status, headers, _ = request(port, *args, conn=conn)
                dt = time.perf_counter() - t0
                if status != 200:
                    with lock:
                        errors.append(str(status))
                    continue
                lat[w].append(dt)
                how = headers.get("X-Search", "?")
                with lock:
                    answered[how] = answered.get(how, 0) + 1
        except Exception as exc:  # noqa: BLE001 - reported in the table
            with lock:
                errors.append(f"{type(exc).__name__}: {exc}")
            try:
                barrier.abort()
            except threading.BrokenBarrierError:
                pass
        finally:
            conn.close()

    threads = [threading.Thread(target=worker, args=(w,), daemon=True) for w in range(clients)]
    for t in threads:
        t.start()
    try:
        barrier.wait(timeout=600)
    except threading.BrokenBarrierError:
        pass
    t_start = state.get("start", time.perf_counter())
    for t in threads:
        t.join(seconds + 180)
    wall = time.perf_counter() - t_start
    all_lat = np.array([x for w in lat for x in w]) * 1000
    out = {"requests": int(all_lat.size), "errors": len(errors), "req/s": all_lat.size / wall if wall else 0.0,
           "answered": ",".join(f"{k} {v}" for k, v in sorted(answered.items())) or "-"}
    if all_lat.size:
        out.update({"p50 ms": float(np.percentile(all_lat, 50)), "p99 ms": float(np.percentile(all_lat, 99)),
                    "max ms": float(all_lat.max())})
    if errors:
        out["first error"] = errors[0][:200]
    return out


# ---------------------------------------------------------------------------------------------- browser
def browser_missing() -> str | None:
    if not os.path.exists(CHROMIUM):
        return f"{CHROMIUM} not found (apt-get install -y chromium, or set CHROMIUM=...)"
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "playwright is not installed (.venv/bin/pip install playwright; its own browser download is not needed)"
    return None


FETCH_JS = """async (url) => {
  const t0 = performance.now();
  const r = await fetch(url);
  const buf = await r.arrayBuffer();
  const t1 = performance.now();
  const f = new Float32Array(buf);
  const n = f.length / 3;
  const x = new Float32Array(n), y = new Float32Array(n), lab = new Uint16Array(n);
  for (let i = 0; i < n; i++) { x[i] = f[3*i]; y[i] = f[3*i+1]; lab[i] = f[3*i+2]; }
  const t2 = performance.now();
  return {count: n, bytes: buf.byteLength, fetch_ms: t1 - t0, decode_ms: t2 - t1, total_ms: t2 - t0};
}"""

# The page's own state, if it exposes one: a drawn point count under a few plausible names.
DRAWN_JS = """() => {
  const s = window.transferkit;
  if (!s) return null;
  for (const k of ['drawn', 'drawnPoints', 'pointsDrawn', 'painted', 'count']) {
    if (typeof s[k] === 'number') return s[k];
  }
  const st = s.state;  // the page's state (web/src/main.js): pointsDrawn once map.draw() resolved
  if (st && typeof st.pointsDrawn === 'number') return st.error ? -1 : st.pointsDrawn;
  if (s.map && typeof s.map.drawn === 'number') return s.map.drawn;
  return null;
}"""


# Frames the scatter plot draws while its camera zooms in and back out (two 2 s transitions): the
# frame rate a user sees while zooming. regl-scatterplot publishes `draw` once per rendered frame.
FPS_JS = """async (ms) => {
  const plot = window.transferkit.scatterplot;
  let frames = 0;
  const count = () => { frames++; };
  plot.subscribe('draw', count);
  const wait = (t) => new Promise((r) => setTimeout(r, t));
  const t0 = performance.now();
  await Promise.race([plot.zoomToLocation([0.3, 0.2], 0.35, {transition: true, transitionDuration: ms}), wait(ms * 5)]);
  await Promise.race([plot.zoomToLocation([0, 0], 1.0, {transition: true, transitionDuration: ms}), wait(ms * 5)]);
  const t1 = performance.now();
  plot.unsubscribe('draw', count);
  return {frames, ms: t1 - t0, fps: frames * 1000 / (t1 - t0)};
}"""


def map_paint(port: int, expected: int, timeout_s: float = 120) -> dict:
    """Time to first paint of the page's map (when it says so) and in-page fetch + decode of the f32 points."""
    from playwright.sync_api import sync_playwright

    out: dict = {}
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, headless=True,
                                     args=["--no-sandbox", "--use-gl=angle", "--use-angle=swiftshader",
                                           "--enable-unsafe-swiftshader"])
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 800})
            base = f"http://{HOST}:{port}"
            t0 = time.perf_counter()
            resp = page.goto(base + "/", wait_until="load", timeout=timeout_s * 1000)
            out["page load ms"] = (time.perf_counter() - t0) * 1000
            deadline = time.perf_counter() + timeout_s
            drawn = None
            if resp is None or resp.status != 200:
                deadline = 0.0
                out["first paint ms"] = f"no page (GET / {resp.status if resp else '?'})"
            while time.perf_counter() < deadline:
                drawn = page.evaluate(DRAWN_JS)
                if drawn is not None and drawn >= expected:
                    out["first paint ms"] = (time.perf_counter() - t0) * 1000
                    break
                if drawn is None and time.perf_counter() - t0 > 15:
                    break  # the page exposes no drawn count: only the fetch figure below
                time.sleep(0.02)
            if "first paint ms" not in out:
                out["first paint ms"] = "no window.transferkit.drawn" if drawn is None else f"not reached ({drawn}/{expected})"
            if isinstance(out.get("first paint ms"), float):
                # interactive: the ids arrived too (hover, click, lasso work), the page's `ready`
                page.wait_for_function("window.transferkit.state.ready", timeout=timeout_s * 1000)
                out["interactive ms"] = (time.perf_counter() - t0) * 1000
                zoom = page.evaluate(FPS_JS, 2000)
                out.update({"zoom frames": zoom["frames"], "zoom fps": zoom["fps"]})
            runs = [page.evaluate(FETCH_JS, base + "/api/points?method=pca&format=f32") for _ in range(3)]
            best = min(runs, key=lambda r: r["total_ms"])
            out.update({"points": best["count"], "MB": best["bytes"] / 1e6, "fetch ms": best["fetch_ms"],
                        "decode ms": best["decode_ms"], "fetch+decode ms": best["total_ms"]})
        finally:
            browser.close()
    return out


def map_rows(store: Path, n: int, dim: int, browser: bool) -> dict:
    row: dict = {"points": n, "dim": dim}
    with Server(store) as srv:
        t0 = time.perf_counter()
        status, headers, body = request(srv.port, "GET", "/api/points?method=pca&format=f32", timeout=1800)
        row["projection (1st call) s"] = time.perf_counter() - t0
        if status != 200:
            raise RuntimeError(f"/api/points answered {status}: {body[:300]!r}")
        t0 = time.perf_counter()
        request(srv.port, "GET", "/api/points?method=pca&format=f32", timeout=600)
        row["f32 cached (python) ms"] = (time.perf_counter() - t0) * 1000
        row["sent"] = int(headers.get("X-Count", len(body) // 12))
        if browser:
            row.update(map_paint(srv.port, row["sent"]))
        row["server RSS MiB"] = srv.rss().get("VmRSS", float("nan"))
    return row


# ---------------------------------------------------------------------------------------------- main
def main() -> None:
    import transferkit as tk

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="10k rows, 5 s per run, 100k-point map as the large one")
    parser.add_argument("--n", type=int, default=None, help="rows of the by-id store and of the first map (default 100k)")
    parser.add_argument("--dim", type=int, default=512)
    parser.add_argument("--map-n", type=int, default=None, help="points of the large map (default 1M, 128-d)")
    parser.add_argument("--map-dim", type=int, default=128)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=None, help="seconds per load run (default 20)")
    parser.add_argument("--upload-images", type=int, default=1000)
    parser.add_argument("--no-browser", action="store_true", help="skip the map paint measurements in Chromium")
    parser.add_argument("--no-map", action="store_true", help="skip part 4 entirely (no 1M store either)")
    parser.add_argument("--map-only", action="store_true", help="only part 4 (the map)")
    parser.add_argument("--keep", default=None, help="build the stores in this folder and keep them (default: a temp folder)")
    args = parser.parse_args()
    n = args.n or (10_000 if args.quick else 100_000)
    seconds = args.seconds or (5.0 if args.quick else 20.0)
    map_n = args.map_n or (100_000 if args.quick else 1_000_000)
    upload_images = min(args.upload_images, 300) if args.quick else args.upload_images
    print(f"machine: {machine()}")
    work = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="bench_serve_"))
    work.mkdir(parents=True, exist_ok=True)
    try:
        run(tk, args, work, n, seconds, map_n, upload_images)
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)


def run(tk, args, work: Path, n: int, seconds: float, map_n: int, upload_images: int) -> None:
    store_path = work / f"synthetic_{n}"
    if not args.map_only:
        searches(tk, args, work, store_path, n, seconds, upload_images)
    elif not store_path.exists():
        synthetic_store(store_path, n, args.dim)
    if not args.no_map:
        maps(args, work, store_path, n, map_n)


def searches(tk, args, work: Path, store_path: Path, n: int, seconds: float, upload_images: int) -> None:
    # ---- 1. by-id search over n synthetic 512-d vectors
    if not store_path.exists():
        t = synthetic_store(store_path, n, args.dim)
        print(f"built a synthetic store of {n} x {args.dim} (100 clusters) in {t:.1f} s")
    store = tk.EmbeddingStore.open(store_path)
    from transferkit.store.index import index_info

    info = index_info(store) or tk.build_index(store, quiet=True)
    print(f"ANN index: {info['kind']}, recall@10 {info['recall_at_10']:.3f}, built in {info['build_seconds']:.1f} s")
    ids = [f"s{i:07d}" for i in range(n)]
    rows = []
    rss = {}
    with Server(store_path) as srv:
        print(f"server up in {srv.start_seconds:.1f} s on {HOST}:{srv.port}; /api/info count {srv.info.get('count')}, "
              f"index {srv.info.get('index')}")
        status, headers, _ = request(srv.port, "GET", f"/api/items/{ids[0]}/thumbnail")
        print(f"thumbnail check: {status} {headers.get('Content-Type')}")
        rss["idle"] = srv.rss()
        for exact in (1, 0):
            for clients in (args.clients, 1):  # 1 client: the service time without queueing
                res = load(srv.port, lambda rng, e=exact: ("GET", f"/api/search?id={rng.choice(ids)}&k=10&exact={e}"),
                           clients, seconds)
                rows.append({"search": f"by id, {'exact' if exact else 'ANN'}", "N": n, "clients": clients, **res})
        rss["after by-id"] = srv.rss()

    # ---- 2. by-upload search on a real store (the server embeds the photo with the store's model)
    real_path, data = work / "real_store", work / "real_data"
    if not real_path.exists():
        t, files = real_store(real_path, data, upload_images)
        print(f"embedded {len(files)} photos (hymenoptera + flowers12) with efficientnet_lite0 in {t:.1f} s")
    photo = sorted((DATASETS / "hymenoptera").rglob("*.jpg"))[0]
    real = tk.EmbeddingStore.open(real_path)
    extractor = tk.Extractor.from_store(real)
    from PIL import Image

    extractor.embed_files([photo])  # warm: model build, compilation, first-batch precision check
    t_files, t_images = [], []
    for _ in range(20):
        t0 = time.perf_counter()
        extractor.embed_files([photo])
        t_files.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        with Image.open(photo) as im:
            extractor.embed_images([im.convert("RGB")])
        t_images.append(time.perf_counter() - t0)
    embed_ms = statistics.median(t_files) * 1000
    embed_images_ms = statistics.median(t_images) * 1000
    body, headers = multipart(photo, {"k": "10", "exact": "1"})
    with Server(real_path) as srv:
        status, _, resp = request(srv.port, "POST", "/api/search", body, headers)
        if status != 200:
            raise RuntimeError(f"POST /api/search answered {status}: {resp[:300]!r}")
        up1 = load(srv.port, lambda rng: ("POST", "/api/search", body, headers), 1, seconds)
        upc = load(srv.port, lambda rng: ("POST", "/api/search", body, headers), args.clients, seconds)
        rss["upload store"] = srv.rss()
        # The ratio the goal names, from pairs taken back to back (embed here, then one upload search),
        # so that a change in background load moves both sides alike.
        pair_embed, pair_upload = [], []
        conn = http.client.HTTPConnection(HOST, srv.port, timeout=60)
        for _ in range(40):
            t0 = time.perf_counter()
            extractor.embed_files([photo])
            pair_embed.append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            request(srv.port, "POST", "/api/search", body, headers, conn=conn)
            pair_upload.append(time.perf_counter() - t0)
        conn.close()
    count = len(real)
    rows.append({"search": "by upload", "N": count, "clients": 1, **up1})
    rows.append({"search": "by upload", "N": count, "clients": args.clients, **upc})

    cols = ["search", "N", "clients", "requests", "errors", "req/s", "p50 ms", "p99 ms", "max ms", "answered"]
    print(f"\nsearch latency, k=10, {seconds:.0f} s per run, keep-alive clients on {HOST} (client and server share the CPUs)")
    print(table(rows, cols))
    for r in rows:
        if "first error" in r:
            print(f"  {r['search']} ({r['clients']} clients): first error {r['first error']}")
    pe, pu = statistics.median(pair_embed) * 1000, statistics.median(pair_upload) * 1000
    ratio = pu / pe
    print(f"\nembedding the same photo in-process ({photo.name}, efficientnet_lite0, backend {extractor.inference_info.get('backend', '?')}"
          f", warm, median of 20): embed_files {embed_ms:.1f} ms, embed_images (decoded PIL) {embed_images_ms:.1f} ms")
    by_id = rows[0].get("p99 ms", float("inf")), rows[2].get("p99 ms", float("inf"))
    print(f"goal: by-id p99 < 50 ms at {n} with {args.clients} clients: exact {by_id[0]:.1f} ms, ANN {by_id[1]:.1f} ms -> "
          f"{'MET' if max(by_id) < 50 else 'NOT MET' if min(by_id) >= 50 else 'MET with ANN only' if by_id[1] < 50 else 'MET exact only'}"
          f"{'' if n >= 100_000 else f' (measured at {n}, not 100k)'}")
    print(f"upload search p50 (1 client run) {up1.get('p50 ms', float('nan')):.1f} ms = "
          f"{up1.get('p50 ms', float('nan')) / embed_ms:.2f}x the embed_files median above (taken at another moment)")
    print(f"goal: 40 back-to-back pairs, median upload search {pu:.1f} ms vs median embed_files {pe:.1f} ms = {ratio:.2f}x "
          f"(goal <= 1.5x) -> {'MET' if ratio <= 1.5 else 'NOT MET'}")
    print("\nserver RSS (MiB; VmHWM = peak)")
    print(table([{"server": k, "VmRSS": v.get("VmRSS"), "VmHWM": v.get("VmHWM")} for k, v in rss.items()],
                ["server", "VmRSS", "VmHWM"]))



def maps(args, work: Path, store_path: Path, n: int, map_n: int) -> None:
    # ---- 4. map: time to first paint
    missing = None if not args.no_browser else "--no-browser"
    missing = missing or browser_missing()
    if missing:
        print(f"\nmap paint in Chromium: skipped ({missing}); projection and f32 transfer measured without a browser")
    big_path = work / f"synthetic_{map_n}_d{args.map_dim}"
    if not big_path.exists():
        t = synthetic_store(big_path, map_n, args.map_dim, chunk=50_000)
        print(f"built a synthetic store of {map_n} x {args.map_dim} (100 clusters) in {t:.1f} s")
    maps = [map_rows(store_path, n, args.dim, not missing), map_rows(big_path, map_n, args.map_dim, not missing)]
    cols = ["points", "dim", "projection (1st call) s", "f32 cached (python) ms", "sent"]
    if not missing:
        cols += ["page load ms", "first paint ms", "interactive ms", "zoom fps", "MB", "fetch ms", "decode ms", "fetch+decode ms"]
    cols += ["server RSS MiB"]
    print(f"\nmap: /api/points?method=pca&format=f32{'' if missing else ' and the page in headless Chromium (software WebGL)'}")
    print(table(maps, cols))


if __name__ == "__main__":
    main()
