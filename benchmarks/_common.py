"""Helpers shared by the benchmark scripts: data folders built from the shared datasets, timed subprocesses."""

from __future__ import annotations

import json
import os
import platform
import random
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DATASETS = Path(os.environ.get("TRANSFERKIT_DATASETS", ROOT.parent / "shared" / "datasets"))
PYTHON = sys.executable
BIN = Path(PYTHON).parent
IMAGE_EXTS = {".jpg", ".jpeg", ".png", ".bmp"}


def images_by_class(dataset: str) -> dict[str, list[Path]]:
    """``{class: [files]}`` over every split folder of a shared dataset (or its top level for flat ones)."""
    root = DATASETS / dataset
    out: dict[str, list[Path]] = {}
    for f in sorted(root.rglob("*")):
        if f.suffix.lower() in IMAGE_EXTS and f.is_file():
            out.setdefault(f.parent.name, []).append(f)
    return out


def link_folder(dest: Path, files: dict[str, list[Path]]) -> int:
    """Symlink ``files`` into ``dest/<class>/``; returns the number of files."""
    n = 0
    for cls, paths in files.items():
        d = dest / cls
        d.mkdir(parents=True, exist_ok=True)
        for i, p in enumerate(paths):
            (d / f"{i:05d}_{p.name}").symlink_to(p)
            n += 1
    return n


def subsample(files: dict[str, list[Path]], limit: int | None, seed: int = 0) -> dict[str, list[Path]]:
    """At most ``limit`` files in all, the same share from each class."""
    total = sum(len(v) for v in files.values())
    if limit is None or limit >= total:
        return files
    rng = random.Random(seed)
    out = {}
    for cls, paths in files.items():
        k = max(1, round(len(paths) * limit / total))
        out[cls] = sorted(rng.sample(paths, min(k, len(paths))))
    return out


def timed_run(cmd: list[str], env: dict[str, str] | None = None) -> tuple[float, str]:
    """Run ``cmd``, return (wall seconds including process start, stdout). Raises on failure."""
    full_env = dict(os.environ, **(env or {}))
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, env=full_env, cwd=ROOT)
    seconds = time.perf_counter() - t0
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    return seconds, proc.stdout


def last_json(text: str) -> dict:
    """The last line of ``text`` that parses as a JSON object (or the whole text)."""
    try:
        return json.loads(text)
    except ValueError:
        pass
    for line in reversed(text.strip().splitlines()):
        try:
            value = json.loads(line)
        except ValueError:
            continue
        if isinstance(value, dict):
            return value
    raise ValueError(f"no JSON object in output: {text[-500:]}")


def machine() -> str:
    model = platform.processor() or "?"
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    return f"{model}, {os.cpu_count()} logical CPUs, load average {load:.2f}"


def save_resnet18_weights(path: Path, seed: int = 0) -> Path:
    """A seeded random torchvision ResNet-18 state_dict (no network here for the ImageNet weights)."""
    import torch
    import torchvision

    torch.manual_seed(seed)
    torch.save(torchvision.models.resnet18().state_dict(), path)
    return path


def table(rows: list[dict], columns: list[str]) -> str:
    """A plain fixed-width table."""
    def fmt(v):
        return f"{v:.4g}" if isinstance(v, float) else str(v)
    cells = [[fmt(r.get(c, "")) for c in columns] for r in rows]
    widths = [max(len(c), *(len(row[i]) for row in cells)) for i, c in enumerate(columns)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(columns, widths)), "  ".join("-" * w for w in widths)]
    lines += ["  ".join(v.ljust(w) for v, w in zip(row, widths)) for row in cells]
    return "\n".join(lines)
