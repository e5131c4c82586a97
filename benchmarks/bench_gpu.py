"""Target 8: the CUDA path, checked once on a GPU machine (prints the card and images/s).

What it measures, on synthetic 224-px images (no data needed), for ``resnet18`` (seeded random
weights; speed and fidelity only) and ``efficientnet_lite0`` (bundled ImageNet weights):

- frozen inference through :class:`transferkit.inference.runner.InferenceRunner` (the path ``embed`` and
  feature-extraction training use): ``fp32`` against ``auto`` (autocast on CUDA), uint8 batches
  copied from pinned memory and normalised on the GPU; min cosine of auto to fp32;
- one fine-tuning step (forward, backward, AdamW) at batch 64: fp32 against the autocast dtype
  ``transferkit`` picks (:func:`transferkit.inference.policy.training_autocast_dtype`);
- with ``--ray`` (needs ``transferkit[ray]``): ``embed_folder_ray`` with one GPU actor
  (``gpus_per_worker=1``) on synthetic JPEGs written to a temporary folder, efficientnet_lite0:
  the images/s a GPU worker reaches end to end (decoding in Ray tasks on the CPU cores).

Usage (on a machine with CUDA; exits with a message elsewhere):
    .venv/bin/python benchmarks/bench_gpu.py [--steps 20] [--quick] [--ray [--ray-images 2048]]
"""

from __future__ import annotations

import argparse
import sys
import time

import numpy as np
import torch
from _common import table


def _sync() -> None:
    torch.cuda.synchronize()


def inference(model_name: str, steps: int) -> list[dict]:
    from transferkit.backbones import create_backbone
    from transferkit.inference.runner import InferenceRunner

    bb = create_backbone(model_name, weights="none" if model_name == "resnet18" else "default").eval()
    pre = bb.preprocessing
    x = np.random.default_rng(0).integers(0, 256, (128, 224, 224, 3), dtype=np.uint8)
    rows, ref = [], None
    for precision in ("fp32", "auto"):
        r = InferenceRunner(bb, input_size=224, device="cuda", backend="torch", precision=precision, preprocessing=pre)
        batches = [(x, i) for i in range(steps)]
        list(r.map_uint8(iter(batches[:2])))  # warm-up (cuDNN autotuning, allocator)
        _sync()
        t0 = time.perf_counter()
        outs = [y for y, _ in r.map_uint8(iter(batches))]
        _sync()
        secs = time.perf_counter() - t0
        if ref is None:
            ref = outs[0]
        cos = float(torch.nn.functional.cosine_similarity(outs[0], ref).min())
        rows.append({"model": model_name, "path": f"inference {precision}", "img/s": len(x) * steps / secs,
                     "min cos vs fp32": f"{cos:.6f}", "dtype": r.info.get("precision")})
    return rows


def finetune(model_name: str, steps: int) -> list[dict]:
    from transferkit.backbones import create_backbone
    from transferkit.inference.policy import training_autocast_dtype
    from transferkit.training.optim import train_step

    dev = torch.device("cuda")
    bb = create_backbone(model_name, weights="none" if model_name == "resnet18" else "default")
    model = torch.nn.Sequential(bb, torch.nn.Linear(bb.num_features, 10)).to(dev).to(memory_format=torch.channels_last)
    opt = torch.optim.AdamW(model.parameters(), 1e-4)
    x = torch.randn(64, 3, 224, 224, device=dev).contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, 10, (64,), device=dev)
    rows = []
    for label, dtype in (("fp32", None), ("auto", training_autocast_dtype(dev, "auto", model))):
        scaler = torch.amp.GradScaler("cuda") if dtype == torch.float16 else None

        def step(dtype=dtype, scaler=scaler):
            train_step(model, opt, torch.nn.functional.cross_entropy, x, y, dtype, scaler)

        for _ in range(3):
            step()
        _sync()
        t0 = time.perf_counter()
        for _ in range(steps):
            step()
        _sync()
        rows.append({"model": model_name, "path": f"fine-tune step {label}", "img/s": 64 * steps / (time.perf_counter() - t0),
                     "min cos vs fp32": "-", "dtype": str(dtype).replace("torch.", "") if dtype else "fp32"})
    return rows


def ray_worker(num_images: int, batch_size: int = 128) -> list[dict]:
    """``embed_folder_ray`` on one GPU actor, synthetic 320x240 JPEGs (the decode tasks use the CPU cores)."""
    import tempfile
    from pathlib import Path

    from PIL import Image

    import transferkit as tk

    rows = []
    with tempfile.TemporaryDirectory(prefix="bench_gpu_ray_") as tmp:
        rng = np.random.default_rng(0)
        for i in range(num_images):
            folder = Path(tmp) / "data" / f"c{i % 4}"
            folder.mkdir(parents=True, exist_ok=True)
            Image.fromarray(rng.integers(0, 256, (240, 320, 3), dtype=np.uint8)).save(folder / f"{i:05d}.jpg", quality=90)
        for workers in (1,):
            report = tk.embed_folder_ray(tk.Extractor.from_backbone("efficientnet_lite0"), Path(tmp) / "data",
                                         Path(tmp) / f"store{workers}", num_workers=workers, gpus_per_worker=1,
                                         batch_size=batch_size, quiet=True)
            rows.append({"model": "efficientnet_lite0", "path": f"embed_folder_ray, {workers} GPU actor",
                         "img/s": report.images_per_second, "min cos vs fp32": "-",
                         "dtype": f"{report.inference.get('backend')} {report.inference.get('precision')}"})
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--quick", action="store_true", help="5 steps")
    parser.add_argument("--ray", action="store_true", help="also embed on Ray with one GPU worker")
    parser.add_argument("--ray-images", type=int, default=2048)
    args = parser.parse_args()
    if args.quick:
        args.steps = 5
    if not torch.cuda.is_available():
        print("bench_gpu: no CUDA device on this machine; nothing to measure.")
        sys.exit(0)
    print(f"device: {torch.cuda.get_device_name(0)}, torch {torch.__version__}, CUDA {torch.version.cuda}")
    rows = []
    for name in ("resnet18", "efficientnet_lite0"):
        rows += inference(name, args.steps)
        rows += finetune(name, args.steps)
    if args.ray:
        rows += ray_worker(args.ray_images)
    print(table(rows, ["model", "path", "img/s", "min cos vs fp32", "dtype"]))


if __name__ == "__main__":
    main()
