"""Decoding images the way real photo collections need: any mode to upright RGB; broken files found up front.

Every image is opened through `open_image`: only regular files (a FIFO named `x.jpg` would block a reader
forever), and nothing over Pillow's decompression-bomb warning threshold, so training, `predict` and serving
all refuse the same files.
"""

import contextlib
import os
import stat
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import BinaryIO

from PIL import Image, ImageOps

from cats_model.system import available_cpus

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff")


def list_images(folder: str | Path) -> list[str]:
    """Every entry under `folder` (recursively, sorted) named like an image, except folders.

    Links to sub-folders are not followed (a link back up would list everything twice). Entries that are not
    regular files (FIFOs, devices) are listed, so that opening them reports them as unreadable, never blocks."""
    return sorted(
        str(p) for p in Path(folder).rglob("*") if p.suffix.lower() in IMAGE_EXTENSIONS and not p.is_dir()
    )


def image_files(paths: list[str | Path]) -> list[str]:
    """Files as given, and the images inside folders (as `list_images` finds them)."""
    files = []
    for path in map(Path, paths):
        files += list_images(path) if path.is_dir() else [str(path)]
    return files


def open_regular_file(path: str | os.PathLike) -> BinaryIO:
    """`path` opened for reading if it is a regular file (or a link to one); an OSError at once otherwise."""
    return open(path, "rb", opener=_open_regular)


def _open_regular(path: str, flags: int) -> int:
    # O_NONBLOCK: opening a FIFO without a writer returns instead of waiting; no effect on regular files.
    fd = os.open(path, flags | getattr(os, "O_NONBLOCK", 0))
    mode = os.fstat(fd).st_mode
    if not stat.S_ISREG(mode):
        os.close(fd)
        kind = "a FIFO" if stat.S_ISFIFO(mode) else "a folder" if stat.S_ISDIR(mode) else "a device"
        raise OSError(f"{path} is {kind}, not a regular file")
    return fd


@contextlib.contextmanager
def open_image(source: str | os.PathLike | BinaryIO) -> Iterator[Image.Image]:
    """Pillow's image of a file path or a binary file object; its header read, its pixels not yet decoded.

    Images over Pillow's warning threshold (`Image.MAX_IMAGE_PIXELS`, about 89 megapixels) are refused as
    decompression bombs: Pillow itself only warns below twice that, after which decoding may take gigabytes."""
    with contextlib.ExitStack() as stack:
        file = source if hasattr(source, "read") else stack.enter_context(open_regular_file(source))
        image = stack.enter_context(Image.open(file))
        limit = Image.MAX_IMAGE_PIXELS
        if limit is not None and image.width * image.height > limit:
            raise Image.DecompressionBombError(
                f"{image.width}x{image.height} pixels is over the limit of {limit} pixels (a decompression bomb?)"
            )
        yield image


def load_rgb(source: str | os.PathLike | BinaryIO, min_side: int | None = None) -> Image.Image:
    """Decode an image as upright RGB, whatever its mode (CMYK, palette, greyscale, alpha) or EXIF orientation.

    With `min_side`, a JPEG is decoded at the smallest DCT scale that keeps both sides at least that long:
    large photos decode several times faster, with no loss at the training resolution.
    """
    with open_image(source) as image:
        if min_side:
            image.draft("RGB", (min_side, min_side))
        image = ImageOps.exif_transpose(image)
        if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
            rgba = image.convert("RGBA")  # transparent areas become white, not black
            background = Image.new("RGB", rgba.size, (255, 255, 255))
            background.paste(rgba, mask=rgba.getchannel("A"))
            return background
        return image.convert("RGB")


def pixels_to_decode(source: str | os.PathLike | BinaryIO, min_side: int) -> int:
    """How many pixels `load_rgb(source, min_side)` decodes (a JPEG's reduced scale counted), from the header."""
    with open_image(source) as image:
        image.draft("RGB", (min_side, min_side))
        return image.width * image.height


def centre_square(image: Image.Image, side: int) -> Image.Image:
    """The centred square of `image` (as long as its shorter side), resized to side x side.

    Cropped before resizing, so the work is bounded by the output whatever the aspect ratio: resizing a 1x100000
    image whole to a shorter side of 256 would make it 256x25.6M pixels (gigabytes, seconds). Training's cache,
    `predict` and the server all prepare images through here."""
    short = min(image.size)
    left, top = (image.width - short) // 2, (image.height - short) // 2
    box = (left, top, left + short, top + short)
    return image.resize((side, side), Image.Resampling.BILINEAR, box=box, reducing_gap=3.0)


def unreadable_reason(path: str) -> str | None:
    """Why `path` cannot be decoded (empty, truncated, not an image, a decompression bomb, not a regular
    file), or None."""
    try:
        with open_image(path) as image:
            image.draft("RGB", (32, 32))  # JPEG: every byte is still read, at a fraction of the cost
            image.load()
    except Exception as err:
        return f"{type(err).__name__}: {err}"
    return None


def find_unreadable(paths: list[str]) -> dict[str, str]:
    """{path: reason} for every file among `paths` that cannot be decoded, checked in parallel."""
    with ThreadPoolExecutor(max(1, available_cpus())) as pool:  # PIL decodes without holding the GIL
        reasons = pool.map(unreadable_reason, paths, chunksize=64)
        return {path: reason for path, reason in zip(paths, reasons) if reason}
