"""A faithful copy of the specification's code, used as the baseline by the benchmarks.

Everything the specification does is kept as written: ``ImageFolder`` with
``Resize(256) / CenterCrop(224) / ToTensor / Normalize`` (the model's mean/std),
``DataLoader(batch_size=32)`` without workers (``shuffle=True`` to train, ``False`` to embed),
eager NCHW fp32, the ``FeatureExtractor`` (``nn.Sequential`` of ``children()[:-1]``), the
feature-extraction loop (frozen model forward on every batch, Adam lr 1e-3 on the head,
5 epochs) and the spec-style partial / full fine-tuning loops (Adam, 1e-4 backbone / 1e-3 head).

Models:
- ``resnet18``: ``torchvision.models.resnet18()`` loaded from ``--weights FILE`` (the same
  file transferkit gets; no network here, so a seeded random state_dict).
- ``efficientnet_lite0``: timm ``tf_efficientnet_lite0`` with the bundled ImageNet weights,
  i.e. ``create_backbone("efficientnet_lite0")`` plus a ``Linear`` head, preprocessed with
  bicubic 256/224 and mean = std = 0.5.

Usage (each run prints one JSON line; ``seconds`` excludes process start):
    python benchmarks/spec_baseline.py embed --model resnet18 --weights r18.pth DATA --out emb.npz
    python benchmarks/spec_baseline.py train --model efficientnet_lite0 --strategy feature-extraction DATA
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
import torch
import torch.nn as nn
import torchvision.models as models
from torch.utils.data import DataLoader
from torchvision import datasets, transforms


class FeatureExtractor:
    """The specification's extractor, verbatim."""

    def __init__(self, model):
        self.features = nn.Sequential(*list(model.children())[:-1])
        self.features.eval()

    def extract(self, image):
        with torch.no_grad():
            embedding = self.features(image)
            embedding = embedding.view(embedding.size(0), -1)
        return embedding.numpy()


def build(model_name: str, weights: str | None, num_classes: int) -> tuple[nn.Module, transforms.Compose, str]:
    """The model (trunk + ``fc``/head as last child), its eval transform and the head attribute name."""
    if model_name == "resnet18":
        model = models.resnet18()
        if weights:
            model.load_state_dict(torch.load(weights, map_location="cpu", weights_only=True))
        model.fc = nn.Linear(model.fc.in_features, num_classes)
        mean, std, interp = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225], transforms.InterpolationMode.BILINEAR
        head = "fc"
    elif model_name == "efficientnet_lite0":
        from transferkit.backbones import create_backbone

        backbone = create_backbone("efficientnet_lite0")
        model = nn.Sequential()
        model.add_module("backbone", backbone)
        model.add_module("fc", nn.Linear(backbone.num_features, num_classes))
        mean, std, interp = [0.5] * 3, [0.5] * 3, transforms.InterpolationMode.BICUBIC
        head = "fc"
    else:
        raise SystemExit(f"unknown model {model_name}")
    transform = transforms.Compose([
        transforms.Resize(256, interpolation=interp),
        transforms.CenterCrop(224),
        transforms.ToTensor(),
        transforms.Normalize(mean=mean, std=std),
    ])
    return model, transform, head


def cmd_embed(args) -> None:
    t0 = time.perf_counter()
    probe = datasets.ImageFolder(args.data)
    model, transform, _ = build(args.model, args.weights, len(probe.classes))
    dataset = datasets.ImageFolder(args.data, transform=transform)
    loader = DataLoader(dataset, batch_size=32, shuffle=False)
    extractor = FeatureExtractor(model)
    all_embeddings = []
    for images, _labels in loader:
        all_embeddings.append(extractor.extract(images))
    emb = np.vstack(all_embeddings)
    seconds = time.perf_counter() - t0
    if args.out:
        np.savez(args.out, embeddings=emb, paths=np.array([p for p, _ in dataset.samples]))
    print(json.dumps({"images": len(dataset), "seconds": seconds, "dim": int(emb.shape[1])}))


def evaluate(model: nn.Module, loader: DataLoader) -> float:
    model.eval()
    correct = total = 0
    with torch.no_grad():
        for images, labels in loader:
            correct += int((model(images).argmax(1) == labels).sum())
            total += len(labels)
    return correct / max(total, 1)


def cmd_train(args) -> None:
    torch.manual_seed(args.seed)
    t_start = time.perf_counter()
    train_probe = datasets.ImageFolder(f"{args.data}/train")
    model, transform, head = build(args.model, args.weights, len(train_probe.classes))
    train_dataset = datasets.ImageFolder(f"{args.data}/train", transform=transform)
    val_dataset = datasets.ImageFolder(f"{args.data}/val", transform=transform)
    train_loader = DataLoader(train_dataset, batch_size=32, shuffle=True)
    val_loader = DataLoader(val_dataset, batch_size=32, shuffle=False)
    fc = getattr(model, head)
    if args.strategy == "feature-extraction":
        for param in model.parameters():
            param.requires_grad = False
        for param in fc.parameters():
            param.requires_grad = True
        optimizer = torch.optim.Adam(fc.parameters(), lr=1e-3)
    elif args.strategy == "partial":
        top = last_stage(model, args.model)
        for name, param in model.named_parameters():
            param.requires_grad = name.startswith(top) or name.startswith(head)
        optimizer = torch.optim.Adam([
            {"params": [p for n, p in model.named_parameters() if n.startswith(top)], "lr": 1e-4},
            {"params": fc.parameters(), "lr": 1e-3},
        ])
    else:  # full
        optimizer = torch.optim.Adam(model.parameters(), lr=1e-4)
    criterion = nn.CrossEntropyLoss()
    epochs = []
    for _epoch in range(args.epochs):
        t0 = time.perf_counter()
        model.train()
        if args.frozen_eval and args.strategy == "feature-extraction":
            model.eval()
            fc.train()
        seen = 0
        for images, labels in train_loader:
            optimizer.zero_grad()
            outputs = model(images)
            loss = criterion(outputs, labels)
            loss.backward()
            optimizer.step()
            seen += len(labels)
        seconds = time.perf_counter() - t0
        epochs.append({"seconds": seconds, "images_per_s": seen / seconds})
    train_seconds = time.perf_counter() - t_start
    acc = evaluate(model, val_loader)
    print(json.dumps({"strategy": args.strategy, "train_seconds": train_seconds, "seconds": time.perf_counter() - t_start,
                      "val_accuracy": acc, "epochs": epochs}))


def last_stage(model: nn.Module, name: str) -> tuple[str, ...]:
    """Parameter-name prefixes of the last stage (``layer4`` in the specification's ResNet example)."""
    if name == "resnet18":
        return ("layer4",)
    # EfficientNet-Lite0: the last block group plus conv_head/bn2, as transferkit's last stage.
    return ("backbone.model.blocks.6.", "backbone.model.conv_head.", "backbone.model.bn2.")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    e = sub.add_parser("embed")
    e.add_argument("data")
    e.add_argument("--model", default="resnet18")
    e.add_argument("--weights")
    e.add_argument("--out")
    t = sub.add_parser("train")
    t.add_argument("data")
    t.add_argument("--model", default="resnet18")
    t.add_argument("--weights")
    t.add_argument("--strategy", default="feature-extraction", choices=["feature-extraction", "partial", "full"])
    t.add_argument("--epochs", type=int, default=5)
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--threads", type=int, default=0)
    t.add_argument("--frozen-eval", action="store_true",
                   help="not the spec: keep the frozen backbone in eval mode (BatchNorm running statistics) while "
                        "the head trains; isolates what the spec's model.train() does to feature extraction")
    args = p.parse_args()
    if args.cmd == "train" and args.threads:
        torch.set_num_threads(args.threads)
    {"embed": cmd_embed, "train": cmd_train}[args.cmd](args)


if __name__ == "__main__":
    main()
