"""Image folders, splits, robust decoding."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from transferkit.data.datasets import collate
from transferkit.data.decode import UnreadableImageError, load_image
from transferkit.data.folders import discover, list_images
from transferkit.errors import DataError, DataNotFoundError


def _names(images) -> list[str]:
    return [p.name for p in images.paths]


def test_split_folders_layout(split_data):
    s = discover(split_data)
    assert s.layout == "split-folders"
    assert s.classes == ["blue", "green", "red"]
    assert s.train.counts() == {"blue": 12, "green": 12, "red": 12}
    assert s.val.counts() == {"blue": 4, "green": 4, "red": 4}
    assert s.test is None and s.skipped == {}
    assert all(p.parent.parent.name == "train" for p in s.train.paths)
    assert all(s.classes[y] == p.parent.name for p, y in zip(s.val.paths, s.val.labels))
    summary = s.summary()
    assert summary["num_train"] == 36 and summary["num_val"] == 12 and summary["skipped_files"] == 0


def test_class_folders_layout_is_split_stratified(flat_data):
    s = discover(flat_data, val_fraction=0.2, seed=0)
    assert s.layout == "class-folders"
    assert s.val.counts() == {"blue": 2, "green": 2, "red": 2}
    assert s.train.counts() == {"blue": 8, "green": 8, "red": 8}
    assert not set(s.train.paths) & set(s.val.paths)
    assert set(s.train.paths) | set(s.val.paths) == set(list_images(flat_data))
    half = discover(flat_data, val_fraction=0.5, seed=0)
    assert half.val.counts() == {"blue": 5, "green": 5, "red": 5}


def test_split_is_deterministic_by_seed(flat_data):
    a, b = discover(flat_data, seed=3), discover(flat_data, seed=3)
    assert a.val.paths == b.val.paths and a.train.paths == b.train.paths
    others = {tuple(discover(flat_data, seed=s).val.paths) for s in range(4, 9)}
    assert len(others | {tuple(a.val.paths)}) > 1, "the seed does not change the split"


def test_val_fraction_out_of_range(flat_data):
    for bad in (0.0, 1.0, -0.1):
        with pytest.raises(DataError, match=r"`val_fraction` must be in \(0, 1\)"):
            discover(flat_data, val_fraction=bad)


def test_train_without_val_is_split_and_test_is_kept(tmp_path, synth):
    rng = np.random.default_rng(0)
    for c in ("blue", "red"):
        synth.write_class_images(tmp_path / "train" / c, synth.COLOURS[c], 5, rng)
        synth.write_class_images(tmp_path / "test" / c, synth.COLOURS[c], 2, rng)
    s = discover(tmp_path, val_fraction=0.2)
    assert s.layout == "train-folder-split"
    assert s.val.counts() == {"blue": 1, "red": 1} and s.train.counts() == {"blue": 4, "red": 4}
    assert s.test is not None and s.test.counts() == {"blue": 2, "red": 2}
    assert s.split("test") is s.test and s.split("valid") is s.val
    assert s.summary()["num_test"] == 4


def test_valid_folder_is_accepted(tmp_path, synth):
    rng = np.random.default_rng(0)
    for c in ("blue", "red"):
        synth.write_class_images(tmp_path / "Training" / c, synth.COLOURS[c], 3, rng)
        synth.write_class_images(tmp_path / "valid" / c, synth.COLOURS[c], 2, rng)
    s = discover(tmp_path)
    assert s.layout == "split-folders"
    assert s.val.counts() == {"blue": 2, "red": 2}
    assert all(p.parent.parent.name == "valid" for p in s.val.paths)


def test_missing_test_split_and_unknown_split(split_data):
    s = discover(split_data)
    with pytest.raises(DataError, match=r"No test/ split under .*Set `split` to val"):
        s.split("test")
    with pytest.raises(DataError, match=r"Unknown split 'dev'\. Choose from: train, val, test\."):
        s.split("dev")


def test_bad_files_are_skipped_and_counted(tmp_path, split_data):
    data = tmp_path / "d"
    shutil.copytree(split_data, data)
    (data / "train" / "red" / "empty.png").write_bytes(b"")
    (data / "train" / "red" / "text.jpg").write_text("not an image")
    (data / "val" / "blue" / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 20)
    (data / "train" / "red" / "notes.txt").write_text("ignored: not an image extension")
    (data / "train" / "red" / ".hidden.jpg").write_text("ignored: hidden")
    (data / "train" / "red" / "Thumbs.db").write_text("ignored: OS clutter")
    s = discover(data)
    assert sorted(Path(p).name for p in s.skipped) == ["corrupt.png", "empty.png", "text.jpg"]
    assert s.skipped[str(data / "train" / "red" / "empty.png")] == "empty file"
    assert s.train.counts()["red"] == 12 and s.val.counts()["blue"] == 4
    assert s.summary()["skipped_files"] == 3


def test_no_images_is_a_data_error(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    (tmp_path / "a" / "readme.txt").write_text("x")
    with pytest.raises(DataError, match=r"No readable images found under .*Expected .*<class>/\*\.jpg"):
        discover(tmp_path)


def test_only_unreadable_images_mentions_the_skipped_count(tmp_path):
    for c in ("a", "b"):
        (tmp_path / c).mkdir()
        (tmp_path / c / "x.jpg").write_bytes(b"")
    with pytest.raises(DataError, match=r"No readable images found under .*\(2 unreadable files skipped\)"):
        discover(tmp_path)


def test_one_class_is_a_data_error(tmp_path, synth):
    synth.write_class_images(tmp_path / "only", synth.COLOURS["red"], 3, np.random.default_rng(0))
    with pytest.raises(DataError, match=r"Only one class \('only'\) under .*at least two class folders"):
        discover(tmp_path)


def test_val_class_missing_from_train_is_a_data_error(tmp_path, synth):
    synth.make_dataset(tmp_path, classes=("blue", "red"), per_class=2, val_per_class=1)
    synth.write_class_images(tmp_path / "val" / "green", synth.COLOURS["green"], 1, np.random.default_rng(1))
    with pytest.raises(DataError, match=r"The validation split has classes not in training: green\. Add them to the train folder"):
        discover(tmp_path)


def test_empty_val_is_a_data_error(tmp_path, synth):
    synth.make_dataset(tmp_path, classes=("blue", "red"), per_class=2, val_per_class=1)
    shutil.rmtree(tmp_path / "val")
    (tmp_path / "val").mkdir()
    with pytest.raises(DataError, match=r"The validation split of .* is empty"):
        discover(tmp_path)


def test_missing_folder_is_data_not_found(tmp_path):
    with pytest.raises(DataNotFoundError, match=r"Dataset folder not found: .*nope\. Expected"):
        discover(tmp_path / "nope")
    assert issubclass(DataNotFoundError, FileNotFoundError)


def test_file_instead_of_folder(tmp_path):
    f = tmp_path / "data.zip"
    f.write_bytes(b"PK")
    with pytest.raises(DataError, match=r"data\.zip is a file, not a folder"):
        discover(f)


def test_list_images_filters_and_sorts(tmp_path):
    for name in ("b.PNG", "a.jpg", "c.webp", "d.txt", ".e.jpg", "desktop.ini"):
        (tmp_path / name).write_bytes(b"x")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "f.tiff").write_bytes(b"x")
    (tmp_path / "sub" / "loop").symlink_to(tmp_path, target_is_directory=True)
    assert [p.relative_to(tmp_path).as_posix() for p in list_images(tmp_path)] == ["a.jpg", "b.PNG", "c.webp", "sub/f.tiff"]


# -- load_image ---------------------------------------------------------------------------------


def _mode_image(mode: str) -> Image.Image:
    if mode in ("I;16", "I", "F"):
        arr = np.linspace(0, 1000, 20 * 10).reshape(10, 20)
        dtype = {"I;16": np.uint16, "I": np.int32, "F": np.float32}[mode]
        return Image.fromarray(arr.astype(dtype), mode=mode) if mode != "I;16" else Image.fromarray(arr.astype(dtype))
    if mode == "P":
        return Image.new("RGB", (20, 10), (10, 200, 30)).convert("P", palette=Image.Palette.ADAPTIVE)
    colour = {"1": 1, "L": 128, "LA": (128, 0), "RGBA": (10, 20, 30, 0), "CMYK": (0, 255, 255, 0)}[mode]
    return Image.new(mode, (20, 10), colour)


@pytest.mark.parametrize("mode, ext", [("L", "png"), ("LA", "png"), ("P", "png"), ("RGBA", "png"), ("CMYK", "jpg"),
                                       ("I;16", "png"), ("I", "tif"), ("F", "tif"), ("1", "png")])
def test_load_image_converts_every_mode_to_rgb(tmp_path, mode, ext):
    im = _mode_image(mode)
    path = tmp_path / f"img.{ext}"
    im.save(path)
    assert Image.open(path).mode == im.mode  # the file really is in that mode
    out = load_image(path)
    assert out.mode == "RGB" and out.size == (20, 10)
    px = np.asarray(out)
    if mode in ("LA", "RGBA"):  # fully transparent -> composited on white
        assert (px == 255).all()
    elif mode == "1":
        assert (px == 255).all()
    elif mode == "L":
        assert (px == 128).all()
    elif mode == "CMYK":
        assert px[..., 0].mean() > 200 and px[..., 1:].mean() < 60  # cyan 0, magenta+yellow full -> red
    elif mode == "P":
        assert tuple(px[0, 0]) == (10, 200, 30)
    else:  # high bit depth: stretched to the full 8-bit range, monotone along the gradient
        assert px.min() == 0 and px.max() == 255
        flat = px[..., 0].reshape(-1)
        assert (np.diff(flat.astype(int)) >= 0).all()


def test_load_image_applies_exif_orientation(tmp_path):
    im = Image.new("RGB", (40, 20), (200, 0, 0))
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to display
    im.save(tmp_path / "rot.jpg", exif=exif.tobytes())
    assert Image.open(tmp_path / "rot.jpg").size == (40, 20)
    assert load_image(tmp_path / "rot.jpg").size == (20, 40)


def test_load_image_pixel_limit(tmp_path):
    Image.new("RGB", (32, 32)).save(tmp_path / "big.png")
    with pytest.raises(UnreadableImageError, match=r"32x32 pixels exceeds the limit of 1,000 \(possible decompression bomb"):
        load_image(tmp_path / "big.png", max_pixels=1000)
    assert load_image(tmp_path / "big.png", max_pixels=None).size == (32, 32)


@pytest.mark.parametrize("content", [b"", b"not an image", b"\x89PNG\r\n\x1a\n" + b"\x00" * 30])
def test_load_image_bad_files_raise_unreadable(tmp_path, content):
    path = tmp_path / "bad.png"
    path.write_bytes(content)
    with pytest.raises(UnreadableImageError):
        load_image(path)


def test_load_image_truncated_file(tmp_path):
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(tmp_path / "full.png")
    data = (tmp_path / "full.png").read_bytes()
    (tmp_path / "cut.png").write_bytes(data[: len(data) // 2])
    with pytest.raises(UnreadableImageError):
        load_image(tmp_path / "cut.png")


def test_load_image_missing_file(tmp_path):
    with pytest.raises(UnreadableImageError):
        load_image(tmp_path / "missing.jpg")


def test_collate_drops_bad_items_and_gives_tensors_for_training():
    import torch

    batch = [(torch.zeros(3, 2, 2), 1, 0, None), (None, 0, 1, "bad"), (torch.ones(3, 2, 2), 2, 2, None)]
    x, y, idx, bad = collate(batch, tensors=True)
    assert x.shape == (2, 3, 2, 2) and y.tolist() == [1, 2] and idx.tolist() == [0, 2] and bad == [(1, "bad")]
    assert x[1].sum() == 12 and y.dtype == idx.dtype == torch.long
    assert collate([(None, 0, 5, "why")], tensors=True) == (None, None, None, [(5, "why")])
    x, labels, idx, bad = collate(batch)
    assert labels == [1, 2] and idx == [0, 2] and bad == [(1, "bad")]


def _photo_like(w, h, mode, seed=0):
    """A smooth image with some texture (what photos look like to a resize kernel)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w]
    base = np.stack([128 + 100 * np.sin(xx / (7 + 3 * c) + yy / (11 + c)) for c in range(3)], axis=-1)
    arr = np.clip(base + rng.normal(0, 4, base.shape), 0, 255).astype(np.uint8)
    im = Image.fromarray(arr, "RGB")
    return im.convert("L") if mode == "L" else im


@pytest.mark.parametrize("interpolation", ["bilinear", "bicubic", "nearest"])
@pytest.mark.parametrize("size, mode", [((500, 375), "RGB"), ((375, 500), "L"), ((256, 300), "RGB"), ((224, 224), "RGB"),
                                        ((901, 257), "L")])
def test_uint8_resize_crop_matches_the_eval_transform(interpolation, size, mode):
    from transferkit.backbones import Preprocessing

    pre = Preprocessing(interpolation=interpolation)
    im = _photo_like(*size, mode)
    ref = pre.eval_transform()(im.convert("RGB"))
    exact = pre.resize_crop_transform(exact=True)(im)
    assert exact.shape == (224, 224, 3) and exact.dtype == np.uint8
    np.testing.assert_allclose(pre.normalize_nhwc(exact[None])[0].numpy(), ref.numpy(), atol=1e-5)
    fast = pre.resize_crop_transform()(im)  # PyTorch's uint8 kernel: within a few grey levels of PIL
    assert fast.shape == (224, 224, 3)
    diff = np.abs(fast.astype(int) - exact.astype(int))
    assert diff.max() <= 3 and diff.mean() < 0.5


def test_fast_resize_reads_pils_memory_without_changing_pixels(monkeypatch):
    """The zero-copy RGBX view of PIL's pixels gives the same bytes as the packed RGB copy."""
    import transferkit.backbones._spec as spec
    from transferkit.backbones import Preprocessing

    im = _photo_like(500, 375, "RGB", seed=3)
    if not hasattr(im, "__arrow_c_array__"):
        pytest.skip("this Pillow has no Arrow export (the resize copies the pixels instead)")
    view = spec._rgbx_view(im)
    assert view is not None and view.shape == (375, 500, 4) and not view.flags.writeable
    np.testing.assert_array_equal(view[:, :, :3], np.asarray(im))
    transform = Preprocessing(interpolation="bicubic").resize_crop_transform()
    fast = transform(im)
    monkeypatch.setattr(spec, "_rgbx_view", lambda im: None)
    np.testing.assert_array_equal(fast, transform(im))


def test_collate_stacks_uint8_images_as_planar_batches():
    rng = np.random.default_rng(0)
    hwc = rng.integers(0, 256, (4, 5, 3), dtype=np.uint8)  # contiguous HWC (the exact PIL path)
    chw_view = np.ascontiguousarray(rng.integers(0, 256, (3, 4, 9), dtype=np.uint8)[:, :, 2:7]).transpose(1, 2, 0)
    items = [(hwc, {"a": 1}, 0, None), (None, None, 1, "bad"), (chw_view, {"a": 2}, 2, None)]
    x, info, idx, bad = collate(items)
    assert x.shape == (2, 4, 5, 3) and idx == [0, 2] and info == [{"a": 1}, {"a": 2}] and bad == [(1, "bad")]
    np.testing.assert_array_equal(x, np.stack([hwc, chw_view]))
    assert x.transpose(0, 3, 1, 2).flags.c_contiguous  # what the OpenVINO graph takes without a copy
    assert collate([(None, None, 0, "why")]) == (None, [], [], [(0, "why")])


def test_load_image_keep_gray(tmp_path):
    Image.new("L", (10, 8), 77).save(tmp_path / "g.png")
    Image.new("RGB", (10, 8), (1, 2, 3)).save(tmp_path / "c.png")
    assert load_image(tmp_path / "g.png").mode == "RGB"
    assert load_image(tmp_path / "g.png", keep_gray=True).mode == "L"
    assert load_image(tmp_path / "c.png", keep_gray=True).mode == "RGB"


def _jpeg_bytes(im, **save) -> bytes:
    import io

    buf = io.BytesIO()
    im.save(buf, "JPEG", **save)
    return buf.getvalue()


@pytest.mark.parametrize("interpolation", ["bilinear", "bicubic"])
@pytest.mark.parametrize("variant, size", [
    ({"subsampling": 0, "quality": 95}, (500, 375)),  # 4:4:4
    ({"subsampling": 1}, (375, 500)),  # 4:2:2
    ({"subsampling": 2}, (333, 500)),  # 4:2:0, odd width
    ({"progressive": True}, (500, 375)),
    ({"grey": True}, (640, 427)),
    ({"subsampling": 2}, (341, 256)),  # already at the resize size: crop only
])
def test_jpeg_fast_decode_gives_pils_pixels(interpolation, variant, size):
    """simplejpeg and Pillow both run libjpeg-turbo with its defaults: the decoded arrays, and the
    224 px crops the decoders hand on, are identical."""
    from transferkit.backbones import Preprocessing
    from transferkit.data.decode import decode_jpeg_rgbx

    variant = dict(variant)
    im = _photo_like(*size, "L" if variant.pop("grey", False) else "RGB", seed=5)
    data = _jpeg_bytes(im, **variant)
    arr = decode_jpeg_rgbx(data, draft_size=256)
    assert arr is not None and arr.shape == (size[1], size[0], 4) and arr.dtype == np.uint8
    import io

    pil = load_image(io.BytesIO(data), keep_gray=True)
    np.testing.assert_array_equal(arr[:, :, :3], np.asarray(pil.convert("RGB")))
    for exact in (False, True):
        transform = Preprocessing(interpolation=interpolation).resize_crop_transform(exact=exact)
        np.testing.assert_array_equal(transform(arr), transform(pil))


def test_jpeg_fast_decode_leaves_the_rest_to_pillow(tmp_path):
    import io

    from transferkit.data.decode import DRAFT_HEADROOM, decode_jpeg_rgbx

    photo = _photo_like(120, 90, "RGB")
    plain = _jpeg_bytes(photo)
    assert decode_jpeg_rgbx(plain) is not None
    exif = Image.Exif()
    exif[0x0112] = 6
    assert decode_jpeg_rgbx(_jpeg_bytes(photo, exif=exif.tobytes())) is None  # needs rotating
    assert decode_jpeg_rgbx(_jpeg_bytes(photo.convert("CMYK"))) is None
    assert decode_jpeg_rgbx(plain[: len(plain) // 2]) is None  # truncated: load_image decides (and reports)
    assert decode_jpeg_rgbx(plain, max_pixels=120 * 90 - 1) is None  # load_image refuses it with its message
    assert decode_jpeg_rgbx(b"\x89PNG\r\n\x1a\n" + b"\x00" * 30) is None and decode_jpeg_rgbx(b"") is None
    side = 4 * 64 * DRAFT_HEADROOM  # load_image drafts this to half size for a 64 px resize, not for 129 px
    big = _jpeg_bytes(Image.new("RGB", (side, side), (9, 9, 9)))
    assert load_image(io.BytesIO(big), draft_size=64).size == (side // 2, side // 2)
    assert decode_jpeg_rgbx(big, draft_size=64) is None
    assert load_image(io.BytesIO(big), draft_size=129).size == (side, side)
    assert decode_jpeg_rgbx(big, draft_size=129).shape == (side, side, 4)


def test_embedding_decoders_use_the_fast_jpeg_path_with_the_same_items(tmp_path, monkeypatch):
    import simplejpeg

    import transferkit.data.datasets as datasets
    from transferkit.backbones import Preprocessing
    from transferkit.embed.stages import file_dataset

    paths = []
    for k, (size, variant) in enumerate([((500, 375), {}), ((300, 420), {"progressive": True}), ((64, 48), {})]):
        paths.append(tmp_path / f"{k}.jpg")
        paths[-1].write_bytes(_jpeg_bytes(_photo_like(*size, "RGB", seed=k), **variant))
    _photo_like(200, 150, "RGB").save(tmp_path / "p.png")
    paths.append(tmp_path / "p.png")
    calls = []
    real = simplejpeg.decode_jpeg
    monkeypatch.setattr(simplejpeg, "decode_jpeg", lambda *a, **k: calls.append(1) or real(*a, **k))
    pre = Preprocessing(interpolation="bicubic")
    fast = [file_dataset(paths, pre, max_pixels=None)[i] for i in range(len(paths))]
    assert len(calls) == 3  # the three JPEGs
    monkeypatch.setattr(datasets, "decode_jpeg_rgbx", lambda *a, **k: None)
    slow = [file_dataset(paths, pre, max_pixels=None)[i] for i in range(len(paths))]
    for a, b in zip(fast, slow):
        np.testing.assert_array_equal(a[0], b[0])
        assert a[1:] == b[1:] and a[1]["width"] > 0
    calls.clear()
    monkeypatch.undo()
    monkeypatch.setattr(simplejpeg, "decode_jpeg", lambda *a, **k: calls.append(1) or real(*a, **k))
    file_dataset(paths, pre, exact=True, max_pixels=None)[0]
    assert calls == []  # --exact-resize decodes with Pillow, as torchvision does
