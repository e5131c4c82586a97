"""Slow: 5% of every flowers12 class filed under another class is found by find_label_issues (the issue's goal)."""

from __future__ import annotations

import random

import pytest

import transferkit as tk

IMAGE_EXTS = {".jpg", ".jpeg", ".png"}


@pytest.mark.slow
def test_injected_label_flips_rank_on_top(tmp_path, flowers12):
    by_class: dict[str, list] = {}
    for f in sorted(flowers12.rglob("*")):
        if f.suffix.lower() in IMAGE_EXTS:
            by_class.setdefault(f.parent.name, []).append(f)
    rng = random.Random(0)
    classes = sorted(by_class)
    data, flipped = tmp_path / "data", set()
    for c in classes:
        files = by_class[c]
        moved = set(rng.sample(range(len(files)), max(1, round(0.05 * len(files)))))
        for i, src in enumerate(files):
            target = rng.choice([o for o in classes if o != c]) if i in moved else c
            name = f"{c}_{i:04d}{src.suffix.lower()}"  # the true class stays readable in the name
            (data / target).mkdir(parents=True, exist_ok=True)
            (data / target / name).symlink_to(src)
            if i in moved:
                flipped.add(name)
    report = tk.find_label_issues(data, model="efficientnet_lite0", store=tmp_path / "store", quiet=True)
    assert report.num_images == sum(len(v) for v in by_class.values())
    n = len(flipped)
    top = [i.path.rsplit("/", 1)[-1] for i in report.issues[:n]]
    precision = sum(name in flipped for name in top) / n  # fewer than n flagged counts as misses
    # 0.979 here (2026-12-03); benchmarks/eval_label_issues.py measured 0.90-1.0 on flowers12 over 6 runs.
    # The issue's goal is 0.7. ~20 s of CPU (65 s wall on the loaded 2-core machine), mostly embedding.
    assert precision >= 0.7, (precision, len(report.issues), n)
    suggested = [i.suggested_label == i.path.rsplit("/", 1)[-1].rsplit("_", 1)[0] for i in report.issues[:n]
                 if i.path.rsplit("/", 1)[-1] in flipped]
    assert sum(suggested) / len(suggested) >= 0.9
