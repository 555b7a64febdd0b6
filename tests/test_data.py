"""Data layer: decoding rule, unreadable files, datasets, manifests, splits, views, synthetic scenes, UCMD."""

from __future__ import annotations

import io
import logging
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from rshash.data import images as images_mod
from rshash.data.datasets import (
    DatasetError,
    SkipReport,
    class_names,
    load_batch,
    load_records,
    read_manifest,
    resolve_data_dir,
    scan_folder,
)
from rshash.data.images import UnreadableImage, decode_rgb, dihedral, load_rgb, resize_rgb, to_rgb8
from rshash.data.splits import apply_split, load_split, save_split, stratified_split
from rshash.data.synthetic import SCENE_CLASSES, make_synthetic_dataset, synthetic_scenes

REPO_ROOT = Path(__file__).resolve().parents[1]


def _save(img: Image.Image, path: Path, **kw: object) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    img.save(path, **kw)
    return path


def _rgb(h: int = 8, w: int = 8, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


# --------------------------------------------------------------------------- conversion rule


def test_rgb_is_unchanged(tmp_path: Path) -> None:
    arr = _rgb()
    assert np.array_equal(load_rgb(_save(Image.fromarray(arr), tmp_path / "a.png")), arr)


def test_grayscale_is_replicated(tmp_path: Path) -> None:
    gray = _rgb()[:, :, 0]
    out = load_rgb(_save(Image.fromarray(gray, "L"), tmp_path / "g.png"))
    assert out.shape == (8, 8, 3) and all(np.array_equal(out[:, :, c], gray) for c in range(3))


def test_rgba_is_composited_over_black() -> None:
    rgba = np.zeros((2, 2, 4), np.uint8)
    rgba[0, 0] = (200, 100, 50, 255)  # opaque: unchanged
    rgba[0, 1] = (200, 100, 50, 0)  # transparent: black
    rgba[1, 0] = (200, 100, 50, 128)  # half: scaled towards black
    out = to_rgb8(Image.fromarray(rgba, "RGBA"))
    assert out[0, 0].tolist() == [200, 100, 50]
    assert out[0, 1].tolist() == [0, 0, 0]
    assert np.abs(out[1, 0].astype(int) - [100, 50, 25]).max() <= 1


def test_palette_maps_to_its_colours(tmp_path: Path) -> None:
    img = Image.new("P", (4, 4))
    img.putpalette([10, 20, 30, 200, 150, 100] + [0] * 762)
    img.putpixel((1, 2), 1)
    out = load_rgb(_save(img, tmp_path / "p.png"))
    assert out[0, 0].tolist() == [10, 20, 30] and out[2, 1].tolist() == [200, 150, 100]


def test_cmyk_is_converted(tmp_path: Path) -> None:
    img = Image.new("CMYK", (3, 3), (0, 0, 0, 0))
    img.putpixel((0, 0), (0, 0, 0, 255))
    out = load_rgb(_save(img, tmp_path / "c.jpg", quality=100))
    assert out.shape == (3, 3, 3)
    assert (out[1:, 1:] > 245).all()  # no ink is white (JPEG may wobble a level)
    assert (out[0, 0] < 30).all()  # full black ink is black


def test_16bit_gets_percentile_stretch(tmp_path: Path) -> None:
    """0..9900 in steps of 100: 2nd/98th percentiles are 198 and 9702, so 5000 -> 128.84 -> 129."""
    values = (np.arange(100, dtype=np.uint16) * 100).reshape(10, 10)
    img = Image.fromarray(values)
    assert img.mode.startswith("I;16")
    out = load_rgb(_save(img, tmp_path / "dem.tif"))
    assert out[5, 0].tolist() == [129, 129, 129]  # value 5000
    assert out[0, 0, 0] == 0 and out[9, 9, 0] == 255  # outliers clipped, not stretching the range
    assert np.array_equal(load_rgb(_save(img, tmp_path / "dem.png")), out)


def test_constant_16bit_image_is_black() -> None:
    assert not to_rgb8(Image.fromarray(np.full((4, 4), 777, np.uint16))).any()


# --------------------------------------------------------------------------- unreadable files


def _truncated(fmt: str) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(_rgb(64, 64)).save(buf, format=fmt)
    return buf.getvalue()[: len(buf.getvalue()) // 2]


BAD_FILES = {
    "empty.png": b"",
    "truncated.jpg": _truncated("JPEG"),
    "truncated.png": _truncated("PNG"),
    "notes.png": b"this is a text file, not an image\n",
}


@pytest.mark.parametrize("name", sorted(BAD_FILES))
def test_bad_files_raise_unreadable_with_name(name: str, tmp_path: Path) -> None:
    path = tmp_path / name
    path.write_bytes(BAD_FILES[name])
    with pytest.raises(UnreadableImage, match=name):
        load_rgb(path)


def test_missing_file_is_unreadable(tmp_path: Path) -> None:
    with pytest.raises(UnreadableImage, match="gone.png"):
        load_rgb(tmp_path / "gone.png")


@pytest.mark.parametrize(
    "target, limit",
    [
        (images_mod, "MAX_PIXELS"),  # our own guard
        (Image, "MAX_IMAGE_PIXELS"),  # Pillow's warning range (limit < pixels <= 2 * limit)
    ],
)
def test_decompression_bomb_is_refused(target: object, limit: str, tmp_path: Path, monkeypatch) -> None:
    path = _save(Image.fromarray(_rgb(16, 16)), tmp_path / "bomb.png")
    monkeypatch.setattr(target, limit, 200)  # 256 pixels
    with pytest.raises(UnreadableImage, match=r"bomb\.png: too many pixels"):
        load_rgb(path)


def test_pillow_bomb_error_range_is_refused(tmp_path: Path, monkeypatch) -> None:
    path = _save(Image.fromarray(_rgb(16, 16)), tmp_path / "bomb.png")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100)  # 256 > 2 * 100
    with pytest.raises(UnreadableImage, match=r"bomb\.png: too many pixels"):
        load_rgb(path)


def test_decode_bytes_names_the_source() -> None:
    with pytest.raises(UnreadableImage, match="upload.jpg"):
        decode_rgb(b"GIF89a-garbage", "upload.jpg")


def test_load_batch_skips_and_reports_bad_files(tmp_path: Path, caplog) -> None:
    good = [_save(Image.fromarray(_rgb(8, 8, s)), tmp_path / f"ok{s}.png") for s in range(3)]
    bad = []
    for name in ("empty.png", "notes.png"):
        (tmp_path / name).write_bytes(BAD_FILES[name])
        bad.append(tmp_path / name)
    paths = [str(p) for p in (good[0], bad[0], good[1], bad[1], good[2])]
    report = SkipReport()
    with caplog.at_level(logging.WARNING, logger="rshash.data.datasets"):
        batch, ok = load_batch(paths, 8, report)
    assert batch.shape == (3, 8, 8, 3) and ok == [0, 2, 4]
    assert [p for p, _ in report.skipped] == [str(b) for b in bad]
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 2 and "empty.png" in warnings[0] and "notes.png" in warnings[1]
    assert report.summary() == "2 unreadable file(s) skipped"


def test_load_batch_all_bad_gives_empty_batch(tmp_path: Path) -> None:
    (tmp_path / "x.png").write_bytes(b"")
    batch, ok = load_batch([str(tmp_path / "x.png")], 4)
    assert batch.shape == (0, 4, 4, 3) and ok == []


def test_odd_sizes_are_resized(tmp_path: Path) -> None:
    paths = [
        str(_save(Image.fromarray(_rgb(h, w)), tmp_path / f"{w}x{h}.png")) for w, h in [(30, 50), (257, 257), (16, 16)]
    ]
    batch, ok = load_batch(paths, 16)
    assert batch.shape == (3, 16, 16, 3) and ok == [0, 1, 2]
    same = _rgb(16, 16)
    assert resize_rgb(same, 16) is same


# --------------------------------------------------------------------------- datasets and manifests


def _tiny_tree(base: Path, layout: dict[str, int], suffix: str = ".png") -> None:
    for cls, n in layout.items():
        for i in range(n):
            _save(Image.fromarray(_rgb(4, 4, i)), base / cls / f"{cls}{i:02d}{suffix}")


def test_scan_folder_ucmd_layout(tmp_path: Path) -> None:
    _tiny_tree(tmp_path / "Images", {"beach": 2, "airplane": 3}, ".tif")
    (tmp_path / "pixels.sha256").write_text("not an image\n")
    records = scan_folder(tmp_path)
    assert [r.label for r in records] == ["airplane"] * 3 + ["beach"] * 2
    assert Path(records[0].path) == tmp_path / "Images" / "airplane" / "airplane00.tif"
    assert class_names(records) == ["airplane", "beach"]


def test_scan_folder_class_folders_ignores_non_images(tmp_path: Path) -> None:
    _tiny_tree(tmp_path, {"a": 2, "b": 1}, ".JPG")
    (tmp_path / "a" / "readme.txt").write_text("x")
    records = load_records(tmp_path)
    assert [(Path(r.path).name, r.label) for r in records] == [("a00.JPG", "a"), ("a01.JPG", "a"), ("b00.JPG", "b")]


def test_scan_flat_folder_is_unlabelled(tmp_path: Path) -> None:
    _save(Image.fromarray(_rgb()), tmp_path / "x.png")
    assert [r.label for r in scan_folder(tmp_path)] == [None]


def test_empty_and_missing_folders_are_dataset_errors(tmp_path: Path) -> None:
    (tmp_path / "empty" / "cls").mkdir(parents=True)
    with pytest.raises(DatasetError, match="no image files"):
        scan_folder(tmp_path / "empty")
    with pytest.raises(DatasetError, match="not a directory"):
        scan_folder(tmp_path / "nope")
    with pytest.raises(DatasetError, match="expected a directory or a .csv"):
        load_records(tmp_path / "nope.txt")
    with pytest.raises(DatasetError, match="does not exist"):
        resolve_data_dir(str(tmp_path / "nope"))


def test_manifest_with_header_and_relative_paths(tmp_path: Path) -> None:
    absolute = tmp_path / "elsewhere" / "z.png"
    csv = tmp_path / "sets" / "list.csv"
    csv.parent.mkdir()
    csv.write_text(f"path,label,split\n# comment\nimgs/a.png,forest,train\nb.png,,\n{absolute},river\n")
    records = load_records(csv)
    assert [(r.path, r.label, r.split) for r in records] == [
        (str(csv.parent / "imgs" / "a.png"), "forest", "train"),
        (str(csv.parent / "b.png"), None, None),
        (str(absolute), "river", None),
    ]


def test_bad_manifests_are_dataset_errors(tmp_path: Path) -> None:
    empty = tmp_path / "empty.csv"
    empty.write_text("path,label\n")
    with pytest.raises(DatasetError, match="no rows"):
        read_manifest(empty)
    wide = tmp_path / "wide.csv"
    wide.write_text("a.png,x,train,extra\n")
    with pytest.raises(DatasetError, match=r"wide\.csv:1: expected path,label,split"):
        read_manifest(wide)


# --------------------------------------------------------------------------- splits


def _records(tmp_path: Path) -> list:
    _tiny_tree(tmp_path, {"a": 10, "b": 20, "c": 10})
    return scan_folder(tmp_path)


def test_stratified_split_exact_deterministic_and_seeded(tmp_path: Path) -> None:
    records = _records(tmp_path)
    fractions = {"train": 0.8, "test": 0.2}
    split = stratified_split(records, fractions, seed=1)
    assert split == stratified_split(records, fractions, seed=1)
    assert split != stratified_split(records, fractions, seed=2)
    for label, n in {"a": 10, "b": 20, "c": 10}.items():
        got = [split[r.path] for r in records if r.label == label]
        assert got.count("train") == 0.8 * n and got.count("test") == 0.2 * n
    three = stratified_split(records, {"train": 0.7, "val": 0.15, "test": 0.15}, seed=0)
    assert sorted(v for r, v in three.items() if "/b/" in r).count("val") == 3


def test_split_fractions_must_sum_to_one(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="sum to 1"):
        stratified_split(_records(tmp_path), {"train": 0.8, "test": 0.1}, seed=0)


def test_split_save_load_apply_round_trip(tmp_path: Path) -> None:
    records = _records(tmp_path / "imgs")
    split = stratified_split(records, {"train": 0.5, "test": 0.5}, seed=3)
    save_split(tmp_path / "split.json", split, 3, {"train": 0.5, "test": 0.5})
    assert load_split(tmp_path / "split.json") == split
    applied = apply_split(records, load_split(tmp_path / "split.json"))
    assert [r.split for r in applied] == [split[r.path] for r in records]
    with pytest.raises(ValueError, match="not in the split file"):
        apply_split(records, {})


# --------------------------------------------------------------------------- dihedral views


def test_dihedral_gives_eight_distinct_views() -> None:
    img = _rgb(5, 5)
    views = [dihedral(img, k) for k in range(8)]
    assert np.array_equal(views[0], img)
    assert len({v.tobytes() for v in views}) == 8
    batch = np.stack([img, _rgb(5, 5, 1)])
    assert all(np.array_equal(dihedral(batch, k)[1], dihedral(batch[1], k)) for k in range(8))
    with pytest.raises(ValueError, match="0..7"):
        dihedral(img, 8)


# --------------------------------------------------------------------------- synthetic scenes


def _colour_histograms(images: np.ndarray, bins: int = 8) -> np.ndarray:
    """Per-channel normalised histograms: a deliberately simple, texture-blind feature."""
    q = (images.astype(np.int64) * bins) // 256
    feats = [np.stack([np.bincount(img[..., c].ravel(), minlength=bins) for c in range(3)]).ravel() for img in q]
    return np.asarray(feats, dtype=np.float64) / (images.shape[1] * images.shape[2])


def test_synthetic_classes_are_separable_but_varied() -> None:
    images, labels = synthetic_scenes(classes=6, per_class=20, size=32, seed=0)
    assert images.shape == (120, 32, 32, 3) and images.dtype == np.uint8
    assert np.bincount(labels).tolist() == [20] * 6
    feats = _colour_histograms(images)
    train = np.arange(120) % 20 < 10
    means = np.stack([feats[train & (labels == k)].mean(0) for k in range(6)])
    pred = np.argmin(((feats[~train, None, :] - means[None]) ** 2).sum(-1), axis=1)
    accuracy = (pred == labels[~train]).mean()
    assert accuracy >= 0.6, accuracy  # chance is 1/6
    for k in range(6):
        members = images[labels == k]
        assert len({m.tobytes() for m in members}) == 20  # no duplicates within a class
        assert members.reshape(20, -1).mean(1).std() > 1.0  # brightness varies within a class


def test_synthetic_is_seeded() -> None:
    a, _ = synthetic_scenes(classes=2, per_class=3, size=16, seed=5)
    b, _ = synthetic_scenes(classes=2, per_class=3, size=16, seed=5)
    c, _ = synthetic_scenes(classes=2, per_class=3, size=16, seed=6)
    assert np.array_equal(a, b) and not np.array_equal(a, c)
    with pytest.raises(ValueError, match="classes must be in"):
        synthetic_scenes(classes=len(SCENE_CLASSES) + 1)


def test_make_synthetic_dataset_is_scannable(tmp_path: Path) -> None:
    paths = make_synthetic_dataset(tmp_path, classes=3, per_class=4, size=24, seed=0, fmt="jpg")
    assert len(paths) == 12 and paths[0] == tmp_path / "agricultural" / "agricultural_000.jpg"
    records = scan_folder(tmp_path)
    assert sorted(r.path for r in records) == sorted(str(p) for p in paths)
    assert class_names(records) == sorted(list(SCENE_CLASSES)[:3])
    assert load_rgb(paths[0]).shape == (24, 24, 3)


# --------------------------------------------------------------------------- the real UCMD copy


@pytest.fixture
def ucmd_dir(monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(REPO_ROOT)  # the default location is relative to the repo root
    try:
        root = resolve_data_dir(None)
    except DatasetError:
        pytest.skip("UCMD not available (set RSHASH_DATA or place it in ../shared/data)")
    if not root.is_dir():
        pytest.skip(f"UCMD path is not a directory: {root}")
    return root


@pytest.mark.ucmd
def test_ucmd_layout_and_pixels_match_manifest(ucmd_dir: Path) -> None:
    from rshash.data.download import UCMERCED_PIXELS, pixel_sha256, read_pixel_manifest

    records = scan_folder(ucmd_dir)
    assert len(records) == 2100 and len(class_names(records)) == 21
    by_name = {f"{r.label}/{Path(r.path).stem}": r.path for r in records}
    manifest = read_pixel_manifest(UCMERCED_PIXELS)
    assert set(manifest) == set(by_name)
    for name in ("harbor/harbor10", "overpass/overpass64", "sparseresidential/sparseresidential45",
                 "agricultural/agricultural00", "tenniscourt/tenniscourt99"):
        assert pixel_sha256(by_name[name]) == (manifest[name].sha256, manifest[name].size), name
    assert manifest["harbor/harbor10"].size == "257x257"
