"""Fault-injection helpers: build broken images and folders on the fly, run the CLI in-process.

Every builder returns what it made so a test can assert exactly which files were skipped.
"""

from __future__ import annotations

import io
import os
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from transferkit.cli import main

REPO = Path(__file__).resolve().parents[2]
PYTHON = sys.executable


def png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def png_bomb(width: int = 50_000, height: int = 50_000) -> bytes:
    """A tiny PNG whose header claims ``width x height`` RGB pixels."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", ihdr) + png_chunk(b"IDAT", zlib.compress(b"\x00" * 64))
            + png_chunk(b"IEND", b""))


def jpeg_bomb(width: int = 50_000, height: int = 50_000) -> bytes:
    """A small baseline JPEG with its SOF0 frame size patched to ``width x height``."""
    buf = io.BytesIO()
    Image.new("RGB", (16, 16), (120, 10, 10)).save(buf, format="JPEG")
    data = bytearray(buf.getvalue())
    sof = data.index(b"\xff\xc0")
    data[sof + 5:sof + 9] = struct.pack(">HH", height, width)
    return bytes(data)


def colour_image(colour=(200, 30, 40), size=(40, 40), seed: int = 0) -> Image.Image:
    rng = np.random.default_rng(seed)
    arr = (np.array(colour) + rng.integers(-20, 21, (size[1], size[0], 3))).clip(0, 255).astype("uint8")
    return Image.fromarray(arr)


def exif_rotated_jpeg(path: Path) -> None:
    """A 60x20 JPEG with EXIF orientation 6 (displayed as 20x60)."""
    im = colour_image(size=(60, 20))
    exif = Image.Exif()
    exif[0x0112] = 6
    im.save(path, exif=exif.tobytes())


def add_bad_files(folder: Path) -> set[str]:
    """Write one file per kind of unreadable image into ``folder``; return their names."""
    folder.mkdir(parents=True, exist_ok=True)
    good = io.BytesIO()
    colour_image(size=(48, 48)).save(good, format="PNG")
    bad = {
        "empty.jpg": b"",
        "truncated.png": good.getvalue()[: len(good.getvalue()) // 2],
        "random.jpg": np.random.default_rng(1).integers(0, 256, 2048, dtype=np.uint8).tobytes(),
        "text.png": b"this is not an image\n" * 20,
        "pdf.jpg": b"%PDF-1.4\n1 0 obj << /Type /Catalog >> endobj\n%%EOF\n",
        "bomb.png": png_bomb(),
        "bomb.jpg": jpeg_bomb(),
    }
    for name, data in bad.items():
        (folder / name).write_bytes(data)
    os.symlink(folder / "does-not-exist.png", folder / "dangling.png")
    os.symlink(folder / "loop-b.png", folder / "loop-a.png")
    os.symlink(folder / "loop-a.png", folder / "loop-b.png")
    return set(bad) | {"dangling.png", "loop-a.png", "loop-b.png"}


def add_odd_but_readable(folder: Path, colour=(200, 30, 40)) -> set[str]:
    """Write readable images of every awkward kind into ``folder``; return their names."""
    folder.mkdir(parents=True, exist_ok=True)
    names: set[str] = set()
    for mode in ("1", "L", "LA", "P", "RGBA", "CMYK", "I;16", "I", "F"):
        ext = "tif" if mode in ("CMYK", "I;16", "I", "F") else "png"
        name = f"mode-{mode.replace(';', '_')}.{ext}"
        colour_image(colour).convert(mode).save(folder / name)
        names.add(name)
    colour_image(colour, size=(1, 1)).save(folder / "one-pixel.png")
    colour_image(colour, size=(1, 5000)).save(folder / "one-by-5000.png")
    colour_image(colour, size=(40, 40)).save(folder / "png-named.jpg", format="PNG")  # another format, readable
    exif_rotated_jpeg(folder / "exif-rotated.jpg")
    colour_image(colour).save(folder / "name with spaces.png")
    colour_image(colour).save(folder / "ünïcødé-图像.png")
    colour_image(colour).save(folder / "--leading-dashes.png")
    os.symlink(folder / "one-pixel.png", folder / "symlink.png")
    names |= {"one-pixel.png", "one-by-5000.png", "png-named.jpg", "exif-rotated.jpg", "name with spaces.png",
              "ünïcødé-图像.png", "--leading-dashes.png", "symlink.png"}
    return names


def add_clutter(folder: Path) -> None:
    """Hidden files, OS clutter and a symlink loop back to the folder: all must be ignored silently."""
    (folder / ".DS_Store").write_bytes(b"\x00\x00\x00\x01Bud1")
    (folder / "Thumbs.db").write_bytes(b"\xd0\xcf\x11\xe0")
    (folder / "desktop.ini").write_text("[.ShellClassInfo]\n")
    (folder / ".hidden.jpg").write_bytes(b"not an image")
    (folder / "._img.jpg").write_bytes(b"AppleDouble")
    (folder / "notes.txt").write_text("ignored: not an image extension")
    os.symlink(folder, folder / "loop-dir")


@pytest.fixture
def cli(capsys):
    """Run the CLI in-process: ``cli(*args) -> (exit_code, stdout, stderr)``."""

    def run(*args) -> tuple[int, str, str]:
        code = main([str(a) for a in args])
        out, err = capsys.readouterr()
        return code, out, err

    return run


def assert_clean_error(code: int, err: str, *needles: str, exit_code: int = 2) -> None:
    """Exit ``exit_code`` (2: the user's mistake, 1: a damaged file), one ``Error:`` line naming the problem, no traceback."""
    assert code == exit_code, err
    assert "Traceback" not in err
    lines = [ln for ln in err.splitlines() if ln.startswith("Error:")]
    assert len(lines) == 1, err
    for needle in needles:
        assert needle.lower() in lines[0].lower(), (needle, lines[0])


def subprocess_env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONUNBUFFERED"] = "1"
    env.setdefault("OMP_NUM_THREADS", "1")
    return env


def spawn(code: str, **kwargs) -> subprocess.Popen:
    """Start ``python -c code`` in the repository root."""
    return subprocess.Popen([PYTHON, "-c", code], cwd=REPO, env=subprocess_env(), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, **kwargs)
