"""Real photo collections hold broken and odd files: readable ones are converted, unreadable ones skipped."""

import contextlib
import csv
import io
import json
import os
import re
import shutil
import threading
from pathlib import Path

import pytest
from helpers import fast_without
from PIL import Image

from cats_model.config import compose_train_config
from cats_model.data.datamodule import FolderDataModule
from cats_model.data.images import load_rgb, unreadable_reason
from cats_model.data.synthetic import SyntheticSpec, ensure_synthetic
from cats_model.errors import UserError
from cats_model.plots import per_class_csv
from cats_model.train import train


def jpeg_bytes(image: Image.Image, **kwargs) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", **kwargs)
    return buffer.getvalue()


def write_odd_images(folder) -> tuple[dict, dict]:
    """(readable odd files: path -> expected (width, height)), (unreadable files: path -> kind)."""
    folder.mkdir(parents=True, exist_ok=True)
    red = Image.new("RGB", (64, 48), (220, 30, 30))
    readable = {}

    def save(name, image, fmt, size, **kwargs):
        image.save(folder / name, format=fmt, **kwargs)
        readable[str(folder / name)] = size

    save("png_named.jpg", red, "PNG", (64, 48))
    save("gif_named.jpg", red.convert("P"), "GIF", (64, 48))
    save("cmyk.jpg", red.convert("CMYK"), "JPEG", (64, 48))
    save("grey.jpg", red.convert("L"), "JPEG", (64, 48))
    save("palette.png", red.convert("P"), "PNG", (64, 48))
    rgba = Image.new("RGBA", (64, 48), (0, 0, 0, 0))
    save("rgba.png", rgba, "PNG", (64, 48))
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: rotate 90 degrees to view
    save("rotated.jpg", red, "JPEG", (48, 64), exif=exif)
    save("large.jpg", Image.new("RGB", (6000, 4000), (20, 200, 20)), "JPEG", (6000, 4000))

    unreadable = {}
    (folder / "truncated.jpg").write_bytes(
        jpeg_bytes(Image.effect_noise((256, 256), 50).convert("RGB"))[:3000]
    )
    (folder / "empty.jpg").write_bytes(b"")
    (folder / "text.jpg").write_text("not an image at all")
    Image.new("1", (15000, 15000)).save(folder / "bomb.png")  # 225 Mpx: over PIL's decompression-bomb limit
    for name in ("truncated.jpg", "empty.jpg", "text.jpg", "bomb.png"):
        unreadable[str(folder / name)] = name
    return readable, unreadable


@pytest.fixture(scope="module")
def odd_images(tmp_path_factory):
    return write_odd_images(tmp_path_factory.mktemp("odd") / "odd")


def test_readable_kinds_become_upright_rgb(odd_images):
    readable, _ = odd_images
    for path, size in readable.items():
        assert unreadable_reason(path) is None, path
        image = load_rgb(path)
        assert image.mode == "RGB" and image.size == size, path
    assert load_rgb(next(p for p in readable if p.endswith("rgba.png"))).getpixel((0, 0)) == (255, 255, 255)
    assert load_rgb(next(p for p in readable if p.endswith("cmyk.jpg"))).getpixel((5, 5))[0] > 150


def test_large_jpegs_decode_at_reduced_scale(odd_images):
    readable, _ = odd_images
    large = next(p for p in readable if p.endswith("large.jpg"))
    image = load_rgb(large, min_side=128)
    assert min(image.size) >= 128 and image.size[0] < 6000


def test_unreadable_kinds_are_named(odd_images):
    _, unreadable = odd_images
    reasons = {kind: unreadable_reason(path) for path, kind in unreadable.items()}
    assert all(reasons.values()), reasons
    assert "truncated" in reasons["truncated.jpg"]
    assert "DecompressionBomb" in reasons["bomb.png"]


def make_folder_dataset(root, odd_images, good_per_class=20):
    readable, unreadable = odd_images
    for name, colour in (("red", (220, 30, 30)), ("blue", (30, 30, 220))):
        (root / name).mkdir(parents=True)
        for i in range(good_per_class):
            Image.new("RGB", (40, 40), colour).save(root / name / f"{i}.jpg")
    for path in [*readable, *unreadable]:
        shutil.copy(path, root / "red")


def test_unreadable_files_are_skipped_and_listed(tmp_path, odd_images):
    make_folder_dataset(tmp_path, odd_images)
    dm = FolderDataModule(str(tmp_path), num_workers=0, max_bad_fraction=0.1)
    dm.setup()
    assert sorted(p.rsplit("/", 1)[1] for p in dm.bad_images) == sorted(odd_images[1].values())
    kept = {p for part in (dm.splits.train, dm.splits.val, dm.splits.test) for p, _ in part}
    assert len(kept) == 40 + len(odd_images[0])
    assert not kept & set(dm.bad_images)


def test_too_many_unreadable_files_is_one_clear_error(tmp_path, odd_images):
    make_folder_dataset(tmp_path, odd_images, good_per_class=5)
    dm = FolderDataModule(str(tmp_path), num_workers=0, max_bad_fraction=0.05)
    with pytest.raises(
        UserError, match=r"4 of 22 images .* are unreadable, more than data.max_bad_fraction=0.05"
    ):
        dm.setup()


@pytest.mark.slow
def test_a_run_over_broken_files_completes_and_reports_them(tmp_path):
    root = ensure_synthetic(
        tmp_path / "pets", SyntheticSpec(trainval_per_class=6, test_per_class=2, dog_breeds=0)
    )
    broken = [root / "images" / f"Bengal_{n}.jpg" for n in (1, 2)] + [root / "images" / "Sphynx_7.jpg"]
    broken[0].write_bytes(broken[0].read_bytes()[:500])
    broken[1].write_bytes(b"")
    broken[2].write_text("<html>not found</html>")
    overrides = [*fast_without("data=", "data.synthetic"), "data=cat_breeds", f"data.root={root}"]
    metrics = train(compose_train_config(overrides, tmp_path / "run"))
    assert sorted(metrics["bad_images"]) == sorted(str(p) for p in broken)
    assert json.loads((tmp_path / "run" / "metrics.json").read_text())["bad_images"] == metrics["bad_images"]
    assert metrics["epoch"] == 1


@contextlib.contextmanager
def never_blocked_on(fifo: Path, seconds: float = 20):
    """Fail instead of hanging if something waits on `fifo`: after `seconds`, open its writing end (which only
    succeeds while a reader waits) to release the reader, and record that one did."""
    blocked = []

    def release():
        with contextlib.suppress(OSError):  # ENXIO: no reader waiting, as it should be
            os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
            blocked.append(fifo)

    timer = threading.Timer(seconds, release)
    timer.start()
    try:
        yield
    finally:
        timer.cancel()
    assert not blocked, f"a reader waited on the FIFO {fifo}"


def test_a_fifo_named_like_an_image_is_skipped_not_waited_on(tmp_path, odd_images):
    make_folder_dataset(tmp_path, odd_images)
    fifo = tmp_path / "red" / "pipe.jpg"
    os.mkfifo(fifo)
    dm = FolderDataModule(str(tmp_path), num_workers=0, max_bad_fraction=0.2)
    with never_blocked_on(fifo):
        dm.setup()
        with pytest.raises(OSError, match="pipe.jpg is a FIFO, not a regular file"):
            load_rgb(fifo)  # what predict and serving call
    assert dm.bad_images[str(fifo)] == f"OSError: {fifo} is a FIFO, not a regular file"
    assert str(fifo) not in {p for part in (dm.splits.train, dm.splits.val, dm.splits.test) for p, _ in part}


@pytest.mark.filterwarnings("ignore::PIL.Image.DecompressionBombWarning")  # Pillow warns, we refuse
def test_an_image_over_pillows_warning_threshold_is_refused(tmp_path):
    # 144 megapixels in 18 KB: under twice Pillow's limit, where Pillow itself would only warn and decode.
    path = tmp_path / "huge.png"
    Image.new("1", (12000, 12000)).save(path)
    assert Image.MAX_IMAGE_PIXELS < 12000 * 12000 < 2 * Image.MAX_IMAGE_PIXELS
    message = f"12000x12000 pixels is over the limit of {Image.MAX_IMAGE_PIXELS} pixels"
    for source in (path, io.BytesIO(path.read_bytes())):  # a file, or an upload's bytes
        with pytest.raises(Image.DecompressionBombError, match=message):
            load_rgb(source)
    assert unreadable_reason(str(path)) == f"DecompressionBombError: {message} (a decompression bomb?)"


def two_class_folder(root: Path, per_class: int = 10) -> Path:
    for name, colour in (("red", (220, 30, 30)), ("blue", (30, 30, 220))):
        (root / name).mkdir(parents=True)
        for i in range(per_class):
            Image.new("RGB", (40, 40), colour).save(root / name / f"{i}.jpg")
    return root


@pytest.mark.parametrize(
    "link, target, message",
    [
        ("loop", ".", "class folder {root}/loop is a link to {root}, which holds the dataset itself"),
        ("up", "..", "class folder {root}/up is a link to {parent}, which holds the dataset itself"),
        ("crimson", "red", "class folders {root}/crimson and {root}/red hold the same images ({root}/red)"),
    ],
)
def test_class_folders_that_hold_the_same_images_are_refused(tmp_path, link, target, message):
    root = two_class_folder(tmp_path / "data")
    (root / link).symlink_to(target)
    with pytest.raises(UserError, match=re.escape(message.format(root=root, parent=tmp_path))):
        FolderDataModule(str(root), num_workers=0).setup()


def folder_with_a_tiny_class(root: Path, images: int) -> Path:
    two_class_folder(root)
    (root / "tiny").mkdir()
    for i in range(images):
        Image.new("RGB", (40, 40), (30, 220, 30)).save(root / "tiny" / f"{i}.jpg")
    return root


@pytest.mark.parametrize("images", [1, 2])
def test_a_class_too_small_for_every_split_is_refused(tmp_path, images):
    root = folder_with_a_tiny_class(tmp_path / "data", images)
    with pytest.raises(
        UserError,
        match=r"1 class\(es\) under .* have no image in the val split \(tiny\): "
        r"a class needs at least 3 readable images",
    ):
        FolderDataModule(str(root), num_workers=0).setup()


def test_a_class_of_three_images_has_one_in_each_split(tmp_path):
    dm = FolderDataModule(str(folder_with_a_tiny_class(tmp_path / "data", 3)), num_workers=0)
    dm.setup()
    assert dm.class_names == ["blue", "red", "tiny"]
    for split in (dm.splits.train, dm.splits.val, dm.splits.test):
        assert sum(label == 2 for _, label in split) == 1


def test_per_class_csv_quotes_class_names(tmp_path):
    names = ["plain", "with, comma", 'with "quotes"', "two\nlines"]
    path = per_class_csv(
        tmp_path / "per_class_accuracy.csv", names, [[1, 0, 0, 0], [0, 2, 0, 0], [0, 0, 0, 1], [0, 0, 0, 0]]
    )
    with open(path, newline="") as file:
        rows = list(csv.DictReader(file))
    assert [row["class"] for row in rows] == names
    assert [(row["accuracy"], row["correct"], row["support"]) for row in rows] == [
        ("1.0000", "1", "1"),
        ("1.0000", "2", "2"),
        ("0.0000", "0", "1"),
        ("0.0000", "0", "0"),
    ]
