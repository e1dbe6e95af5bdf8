"""Download Oxford-IIIT Pet, verified and idempotent: `python -m cats_model.download --root DIR`.

Archives are fetched into a folder beside DIR (resumable with HTTP ranges, retried with backoff), checked
against known digests, extracted into a staging folder beside DIR with every member checked (files and
folders only, sizes capped), and only then renamed to DIR with a completion marker. A failure at any step
leaves DIR as it was, and nothing is ever written outside these folders.
"""

import argparse
import hashlib
import http.client
import json
import logging
import os
import shutil
import string
import sys
import tarfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from cats_model.data.oxford import OxfordPet
from cats_model.errors import UserError, exit_on_user_error

log = logging.getLogger(__name__)
BASE_URL = "https://www.robots.ox.ac.uk/~vgg/data/pets/data"
# The dataset's published archives (the same md5 digests torchvision pins).
CHECKSUMS = {
    "images.tar.gz": "5c4f3ee8e5d25df40f4fd59a7f44e54c",
    "annotations.tar.gz": "95a8c909bbe2e81eed6a22bccdf3f68f",
}
DIGEST_ALGORITHMS = {32: "md5", 64: "sha256"}  # by the length of the hex digest
# Extraction caps, per archive: ten times the real dataset (images.tar.gz, 792 MB, holds about 800 MB of
# JPEGs; annotations.tar.gz is 19 MB), and far above its largest file; a small archive can expand to terabytes.
MAX_EXTRACTED_BYTES = 8 * 10**9
MAX_MEMBER_BYTES = 256 * 10**6
MARKER = ".complete"
CHUNK = 1 << 20


@dataclass
class Source:
    base_url: str = BASE_URL
    checksums: dict[str, str] | None = None
    retries: int = 5
    backoff_s: float = 1.0
    timeout_s: float = 60.0
    max_extracted_bytes: int = MAX_EXTRACTED_BYTES
    max_member_bytes: int = MAX_MEMBER_BYTES

    def __post_init__(self):
        self.checksums = dict(CHECKSUMS) if self.checksums is None else checked_checksums(self.checksums)


def checked_checksums(value, origin: str = "checksums") -> dict[str, str]:
    """`value` when it maps exactly the dataset's archive names to md5 or sha256 hex digests; else a UserError.

    The names become file names in the download folder: any other key (`../x`, `/tmp/x`) would write elsewhere."""
    if not isinstance(value, dict) or sorted(value) != sorted(CHECKSUMS):
        raise UserError(
            f'{origin}: expected a JSON object {{"images.tar.gz": digest, "annotations.tar.gz": digest}}, '
            f"got {json.dumps(value)[:100]}"
        )
    for name, digest in value.items():
        if not (
            isinstance(digest, str)
            and len(digest) in DIGEST_ALGORITHMS
            and set(digest) <= set(string.hexdigits)
        ):
            raise UserError(
                f"{origin}: {name}: {json.dumps(digest)[:80]} is neither an md5 (32 hex digits) nor a sha256 (64) digest"
            )
    return {name: value[name].lower() for name in CHECKSUMS}


def default_root() -> Path:
    """Where training reads the dataset: `paths.oxford_dir` of the configs."""
    from cats_model.paths import configured_path

    return configured_path("oxford_dir")


def is_complete(root: Path) -> bool:
    return (root / MARKER).is_file() and OxfordPet(root).exists()


def download(root: str | Path, source: Source | None = None, force: bool = False) -> Path:
    """Make `root` a complete, verified Oxford-IIIT Pet tree; a no-op when it already is."""
    source = source or Source()
    root = Path(root).expanduser().absolute()
    if is_complete(root) and not force:
        log.info("Oxford-IIIT Pet is already complete at %s; nothing to do", root)
        return root
    if root.exists() and any(root.iterdir()) and not force:
        raise UserError(
            f"{root} holds files but no completed download ({MARKER} missing): move it away, or pass --force to replace it"
        )
    root.parent.mkdir(parents=True, exist_ok=True)
    downloads = root.parent / f".{root.name}.downloads"
    staging = root.parent / f".{root.name}.staging"
    if staging.exists():  # a half-finished earlier attempt: never mistaken for a dataset, cleaned up here
        log.info("removing the unfinished extraction %s of an earlier attempt", staging)
        shutil.rmtree(staging)
    downloads.mkdir(exist_ok=True)
    try:
        archives = [
            fetch(f"{source.base_url.rstrip('/')}/{name}", downloads / name, digest, source)
            for name, digest in source.checksums.items()
        ]
        staging.mkdir()
        for archive in archives:
            safe_extract(archive, staging, source.max_extracted_bytes, source.max_member_bytes)
        if not OxfordPet(staging).exists():
            raise UserError(
                f"the archives from {source.base_url} hold no annotations/list.txt, trainval.txt and test.txt"
            )
        images = sum(1 for _ in (staging / "images").glob("*.jpg"))
        (staging / MARKER).write_text(json.dumps({"archives": source.checksums, "images": images}) + "\n")
        _swap_into_place(staging, root)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    shutil.rmtree(downloads, ignore_errors=True)  # kept on failure, so that a rerun continues the download
    log.info("Oxford-IIIT Pet ready at %s (%d images)", root, images)
    return root


def _swap_into_place(staging: Path, root: Path) -> None:
    if root.exists():  # --force, or an empty folder: move the old one aside first, delete it once replaced
        retired = root.parent / f".{root.name}.retired"
        shutil.rmtree(retired, ignore_errors=True)
        root.rename(retired)
        staging.rename(root)
        shutil.rmtree(retired, ignore_errors=True)
    else:
        staging.rename(root)


def file_digest(path: Path, algorithm: str) -> str:
    digest = hashlib.new(algorithm)
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(CHUNK), b""):
            digest.update(block)
    return digest.hexdigest()


def fetch(url: str, target: Path, expected: str, source: Source) -> Path:
    """Download `url` to `target` unless a verified copy is there; resume a partial one where the server allows."""
    algorithm = DIGEST_ALGORITHMS[len(expected)]
    if target.is_file() and file_digest(target, algorithm) == expected.lower():
        return target
    partial = target.with_name(target.name + ".part")
    for attempt in range(1, source.retries + 2):
        try:
            _transfer(url, partial, source.timeout_s)
            break
        except urllib.error.HTTPError as err:
            if err.code < 500 and err.code != 429:  # 404, 403: retrying will not help
                raise UserError(f"could not download {url}: HTTP {err.code} {err.reason}") from err
            reason = f"HTTP {err.code}"
        except (urllib.error.URLError, OSError, http.client.HTTPException) as err:
            reason = f"{type(err).__name__}: {getattr(err, 'reason', err)}"
        if attempt > source.retries:
            raise UserError(
                f"could not download {url} after {attempt} attempts ({reason}); check the network or use --base-url for a mirror"
            )
        delay = source.backoff_s * 2 ** (attempt - 1)
        log.warning(
            "download of %s interrupted (%s); retry %d/%d in %.1f s",
            url,
            reason,
            attempt,
            source.retries,
            delay,
        )
        time.sleep(delay)
    actual = file_digest(partial, algorithm)
    if actual != expected.lower():
        partial.unlink()
        raise UserError(
            f"{target.name} from {url} has {algorithm} {actual}, expected {expected}: a corrupt download or a different archive (see --checksums)"
        )
    partial.rename(target)
    return target


def _transfer(url: str, partial: Path, timeout_s: float) -> None:
    """Append the rest of `url` to `partial`, asking for a byte range when part of it is already there."""
    have = partial.stat().st_size if partial.exists() else 0
    request = urllib.request.Request(url, headers={"Range": f"bytes={have}-"} if have else {})
    try:
        response = urllib.request.urlopen(request, timeout=timeout_s)
    except urllib.error.HTTPError as err:
        if err.code == 416:  # the part is already whole (or longer than the file): start over
            partial.unlink(missing_ok=True)
            return _transfer(url, partial, timeout_s)
        raise
    with response:
        resumed = have and response.status == 206
        length = response.headers.get("Content-Length")
        total = (int(length) + (have if resumed else 0)) if length else None
        with (
            open(partial, "ab" if resumed else "wb") as out,
            _progress(partial.name[:-5], total, have if resumed else 0) as advance,
        ):
            while block := response.read(CHUNK):
                out.write(block)
                advance(len(block))
        size = partial.stat().st_size
        if total is not None and size < total:
            raise ConnectionError(f"connection closed after {size} of {total} bytes")


class _progress:
    """A progress bar with size and speed on a terminal; a quiet no-op elsewhere (logs, tests)."""

    def __init__(self, name: str, total: int | None, done: int):
        self.name, self.total, self.done = name, total, done

    def __enter__(self):
        if not sys.stderr.isatty():
            return lambda n: None
        from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TransferSpeedColumn

        self._bar = Progress(
            TextColumn("{task.description}"), BarColumn(), DownloadColumn(), TransferSpeedColumn()
        )
        self._bar.start()
        task = self._bar.add_task(self.name, total=self.total, completed=self.done)
        return lambda n: self._bar.advance(task, n)

    def __exit__(self, *exc):
        if hasattr(self, "_bar"):
            self._bar.stop()


def safe_extract(
    archive: Path,
    destination: Path,
    max_bytes: int = MAX_EXTRACTED_BYTES,
    max_member_bytes: int = MAX_MEMBER_BYTES,
) -> None:
    """Extract a tar archive into `destination` member by member, trusting nothing in it.

    Only regular files and folders are accepted: Oxford's archives hold nothing else, and a link lets later
    members land elsewhere in ways a check of the names cannot see (CVE-2025-4517 fools Python's own
    `filter="data"` on unpatched versions), so the protection does not depend on the Python version. Files are
    written without following links and checked with their parents resolved; their sizes are capped."""
    destination = destination.resolve()
    extracted = 0
    try:
        with tarfile.open(archive, "r|*") as tar:  # one pass over the stream
            for member in tar:
                target = _member_target(member, destination, archive.name)
                if member.isdir():
                    target.mkdir(parents=True, exist_ok=True)
                    continue
                extracted += member.size
                if member.size > max_member_bytes or extracted > max_bytes:
                    raise UserError(
                        f"{archive.name} expands to more than its cap ({max_member_bytes / 1e6:g} MB per file, "
                        f"{max_bytes / 1e9:g} GB in all) at {member.name}: refused; raise --max-member-mb or "
                        f"--max-extracted-gb if the archive is trusted"
                    )
                target.parent.mkdir(parents=True, exist_ok=True)
                _write_new_file(tar.extractfile(member), target)
                if not target.resolve(strict=True).is_relative_to(destination):
                    raise UserError(f"{archive.name}: {member.name} landed outside the target, refused")
    except (OSError, tarfile.TarError) as err:  # a full disk, a damaged archive
        raise UserError(f"could not extract {archive.name} into {destination}: {err}") from err


def _member_target(member: tarfile.TarInfo, destination: Path, archive: str) -> Path:
    """Where `member` goes inside `destination`; a UserError for any member that is not a plain file or
    folder with a relative name inside it."""
    relative = PurePosixPath(member.name)
    outside = f"{archive} has a member that would land outside the target, refused: {member.name}"
    if relative.is_absolute() or ".." in relative.parts:
        raise UserError(outside)
    if member.issym() or member.islnk():
        raise UserError(
            f"{archive} has a link member, refused: {member.name} -> {member.linkname} (the dataset has no "
            f"links; through one, later members would land outside the target)"
        )
    if not (member.isreg() or member.isdir()):
        raise UserError(f"{archive} has a device or FIFO member, refused: {member.name}")
    target = destination.joinpath(*relative.parts)
    if not target.parent.resolve().is_relative_to(destination):
        raise UserError(outside)
    return target


def _write_new_file(source, target: Path) -> None:
    # O_NOFOLLOW: never write through a link, whatever is at `target`.
    flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | getattr(os, "O_NOFOLLOW", 0)
    with os.fdopen(os.open(target, flags, 0o644), "wb") as out:
        shutil.copyfileobj(source, out, CHUNK)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="data/download.sh", description=__doc__.split("\n")[0])
    parser.add_argument(
        "--root", type=Path, default=default_root(), help="dataset folder (default: %(default)s)"
    )
    parser.add_argument(
        "--base-url", default=BASE_URL, help="a mirror serving images.tar.gz and annotations.tar.gz"
    )
    parser.add_argument(
        "--checksums", type=Path, help="JSON {archive name: md5 or sha256 hex} for a mirror's archives"
    )
    parser.add_argument("--retries", type=int, default=5, help="retries per archive on network errors")
    parser.add_argument("--timeout", type=float, default=60.0, help="seconds without data before a retry")
    parser.add_argument("--force", action="store_true", help="replace whatever is at --root")
    parser.add_argument(
        "--max-extracted-gb", type=float, default=MAX_EXTRACTED_BYTES / 1e9,
        help="refuse an archive that expands to more than this (default: %(default)g)",
    )  # fmt: skip
    parser.add_argument(
        "--max-member-mb", type=float, default=MAX_MEMBER_BYTES / 1e6,
        help="refuse an archive holding a file larger than this (default: %(default)g)",
    )  # fmt: skip
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    with exit_on_user_error():
        checksums = None
        if args.checksums:
            try:
                checksums = json.loads(args.checksums.read_text())
            except (OSError, ValueError) as err:
                raise UserError(f"--checksums {args.checksums}: {err}") from err
            checksums = checked_checksums(checksums, f"--checksums {args.checksums}")
        source = Source(
            args.base_url,
            checksums,
            args.retries,
            timeout_s=args.timeout,
            max_extracted_bytes=round(args.max_extracted_gb * 1e9),
            max_member_bytes=round(args.max_member_mb * 1e6),
        )
        download(args.root, source, args.force)


if __name__ == "__main__":
    main()
