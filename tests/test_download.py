"""The Oxford-IIIT Pet download against a real HTTP mirror on loopback: success, faults, and reruns."""

import json
import os
import re
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest
from helpers import run_cli_in_process
from pet_mirror import Mirror, md5s, oxford_archives, tar_gz, tar_gz_entries

from cats_model.data.datamodule import CatBreedsDataModule
from cats_model.download import MARKER, Source, download, main
from cats_model.errors import UserError

FAST_RETRIES = dict(retries=2, backoff_s=0.01, timeout_s=5)


@pytest.fixture(scope="module")
def archives(tmp_path_factory) -> dict[str, bytes]:
    return oxford_archives(tmp_path_factory.mktemp("mirror"))


def download_sh(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    script = Path(__file__).resolve().parent.parent / "data" / "download.sh"
    env = {**os.environ, "PYTHON": sys.executable}
    return subprocess.run(
        ["bash", str(script), *args], capture_output=True, text=True, cwd=cwd, env=env, timeout=300
    )


def snapshot(folder: Path) -> dict[str, int]:
    return (
        {str(p.relative_to(folder)): p.stat().st_mtime_ns for p in folder.rglob("*")}
        if folder.exists()
        else {}
    )


@pytest.mark.slow
def test_download_sh_then_train_on_it(tmp_path, archives):
    checksums = tmp_path / "checksums.json"
    checksums.write_text(json.dumps(md5s(archives)))
    with Mirror(archives) as mirror:
        # A relative --root means relative to the caller's directory.
        result = download_sh(
            "--root", "pets", "--base-url", mirror.url, "--checksums", str(checksums), cwd=tmp_path
        )
        assert result.returncode == 0, result.stderr
        root = tmp_path / "pets"
        assert (root / MARKER).is_file()
        assert sorted(p.name for p in tmp_path.iterdir()) == [
            "checksums.json",
            "pets",
        ]  # no leftovers beside it
        assert len(list((root / "images").glob("*.jpg"))) == 14 * 6

        before, served = snapshot(root), len(mirror.requests)
        again = download_sh(
            "--root", str(root), "--base-url", mirror.url, "--checksums", str(checksums), cwd=tmp_path
        )
        assert again.returncode == 0 and "nothing to do" in again.stderr
        assert (
            len(mirror.requests) == served and snapshot(root) == before
        )  # a no-op: nothing fetched or written

    dm = CatBreedsDataModule(str(root), num_workers=0)
    dm.setup()
    assert len(dm.class_names) == 12 and sum(label >= 0 for _, label in dm.splits.test) == 24  # and the dogs

    train = run_cli_in_process(
        "debug=default", "data=cat_breeds", f"data.root={root}", "data.image_size=32", "model=mobilenet_v3_small",
        "model.pretrained=false", f"hydra.run.dir={tmp_path}/run", "callbacks.progress_bar=null",
    )  # fmt: skip
    assert train.returncode == 0, train.stderr[-3000:]
    assert json.loads((tmp_path / "run" / "metrics.json").read_text())["classes"] == dm.class_names


@pytest.mark.slow
def test_checksum_mismatch_is_one_line_and_leaves_root_alone(tmp_path, archives):
    checksums = tmp_path / "checksums.json"
    checksums.write_text(json.dumps({**md5s(archives), "images.tar.gz": "0" * 32}))
    with Mirror(archives) as mirror:
        result = download_sh(
            "--root",
            str(tmp_path / "pets"),
            "--base-url",
            mirror.url,
            "--checksums",
            str(checksums),
            cwd=tmp_path,
        )
    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("error: images.tar.gz from") and "expected 00000000" in last
    assert not (tmp_path / "pets").exists()


def test_a_dropped_connection_is_resumed_with_a_range_request(tmp_path, archives):
    with Mirror(archives) as mirror:
        mirror.drop_after["images.tar.gz"] = (len(archives["images.tar.gz"]) // 2, 1)
        root = download(tmp_path / "pets", Source(mirror.url, md5s(archives), **FAST_RETRIES))
        image_requests = [r for p, r in mirror.requests if p.endswith("images.tar.gz")]
    assert image_requests == [None, f"bytes={len(archives['images.tar.gz']) // 2}-"]
    assert len(list((root / "images").iterdir())) == 14 * 6  # whole, and nothing twice


def test_a_connection_that_keeps_dropping_fails_cleanly(tmp_path, archives):
    with Mirror(archives) as mirror:
        mirror.drop_after["annotations.tar.gz"] = (10, 100)
        with pytest.raises(UserError, match=r"could not download .*annotations.tar.gz after 3 attempts"):
            download(tmp_path / "pets", Source(mirror.url, md5s(archives), **FAST_RETRIES))
    assert not (tmp_path / "pets").exists()


def test_a_missing_archive_is_not_retried(tmp_path, archives):
    with Mirror({"annotations.tar.gz": archives["annotations.tar.gz"]}) as mirror:
        with pytest.raises(UserError, match="HTTP 404"):
            download(tmp_path / "pets", Source(mirror.url, md5s(archives), **FAST_RETRIES))
        assert len([p for p, _ in mirror.requests if p.endswith("images.tar.gz")]) == 1


@pytest.mark.parametrize(
    "evil",
    [
        {"members": {"../escaped.txt": b"x"}},
        {"members": {"/tmp/absolute-escape.txt": b"x"}},
        {"members": {}, "links": {"annotations/link": "../../escaped.txt"}},
    ],
    ids=["dotdot", "absolute", "symlink-out"],
)
def test_members_that_would_land_outside_are_refused(tmp_path, archives, evil):
    bad = {**archives, "annotations.tar.gz": tar_gz(evil["members"], evil.get("links"))}
    work = tmp_path / "work"
    work.mkdir()
    with Mirror(bad) as mirror:
        with pytest.raises(UserError, match="would land outside the target"):
            download(work / "pets", Source(mirror.url, md5s(bad), **FAST_RETRIES))
    assert not (work / "pets").exists()
    assert not (tmp_path / "escaped.txt").exists() and not Path("/tmp/absolute-escape.txt").exists()


def test_a_half_finished_attempt_is_cleaned_up_not_mistaken(tmp_path, archives):
    staging = tmp_path / ".pets.staging"
    (staging / "annotations").mkdir(parents=True)
    (staging / "annotations" / "list.txt").write_text("Abyssinian_1 1 1 1\n")
    with Mirror(archives) as mirror:
        root = download(tmp_path / "pets", Source(mirror.url, md5s(archives), **FAST_RETRIES))
    assert not staging.exists() and (root / MARKER).is_file()


def test_a_foreign_folder_is_left_untouched(tmp_path, archives):
    root = tmp_path / "pets"
    root.mkdir()
    (root / "notes.txt").write_text("mine")
    with Mirror(archives) as mirror:
        with pytest.raises(UserError, match="--force"):
            download(root, Source(mirror.url, md5s(archives), **FAST_RETRIES))
        assert mirror.requests == []
    assert [p.name for p in root.iterdir()] == ["notes.txt"]


def run_main(*args: str, capsys) -> tuple[int, list[str]]:
    """`python -m cats_model.download ARGS` in-process: (exit code, stderr lines)."""
    with pytest.raises(SystemExit) as exited:
        main(list(args))
    return exited.value.code, capsys.readouterr().err.strip().splitlines()


def path_max_escape(destination: Path, escape_to: str) -> bytes:
    """The CVE-2025-4517 pattern: a chain of links whose resolved path exceeds PATH_MAX, so that a check that
    resolves names (os.path.realpath, tarfile's data filter before the fix) stops resolving and takes the rest
    as text; then a link `escape` to `<destination>/../<escape_to>` and a file through it."""
    steps = "abcdefghijklmnop"
    path_max = os.pathconf(destination.parent, "PC_PATH_MAX")
    component = "d" * ((path_max - len(str(destination)) - 1) // (len(steps) + 1))
    entries, path = [], ""
    for step in steps:  # each step a long folder, and a one-letter link to it
        entries += [
            (os.path.join(path, component), tarfile.DIRTYPE, b""),
            (os.path.join(path, step), tarfile.SYMTYPE, component),
        ]
        path = os.path.join(path, component)
    linkpath = os.path.join(*steps, "l" * 254)  # resolves to `destination`, but past PATH_MAX
    entries.append((linkpath, tarfile.SYMTYPE, os.path.join(*[".."] * len(steps))))
    entries.append(("escape", tarfile.SYMTYPE, os.path.join(linkpath, "..", escape_to)))
    entries.append(("escape/escaped.txt", tarfile.REGTYPE, b"written outside\n"))
    return tar_gz_entries(entries)


def test_a_link_chain_past_path_max_writes_nothing_outside(tmp_path, archives, capsys):
    work = tmp_path / "work"
    staging = work / ".pets.staging"  # where download() extracts, beside --root
    work.mkdir()
    bad = {**archives, "annotations.tar.gz": path_max_escape(staging, "..")}  # escape -> tmp_path
    checksums = tmp_path / "checksums.json"
    checksums.write_text(json.dumps(md5s(bad)))
    with Mirror(bad) as mirror:
        code, stderr = run_main(
            "--root",
            str(work / "pets"),
            "--base-url",
            mirror.url,
            "--checksums",
            str(checksums),
            capsys=capsys,
        )
    assert not list(tmp_path.rglob("escaped.txt"))
    assert code == 2 and len(stderr) == 1, stderr
    assert stderr[0].startswith("error: annotations.tar.gz has a link member, refused: a -> ddd")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checksums.json", "work"]
    assert [p.name for p in work.iterdir()] == [
        ".pets.downloads"
    ]  # the archives, kept for a rerun; no staging


@pytest.mark.parametrize(
    "entries, message",
    [
        (
            [
                ("annotations/list.txt", tarfile.REGTYPE, b"x"),
                ("annotations/copy.txt", tarfile.LNKTYPE, "annotations/list.txt"),
            ],
            "has a link member, refused: annotations/copy.txt -> annotations/list.txt",
        ),
        (
            [("annotations/here", tarfile.SYMTYPE, "list.txt")],
            "has a link member, refused: annotations/here -> list.txt",
        ),
        (
            [("annotations/pipe", tarfile.FIFOTYPE, b"")],
            "has a device or FIFO member, refused: annotations/pipe",
        ),
        (
            [("annotations/zero", tarfile.CHRTYPE, b"")],
            "has a device or FIFO member, refused: annotations/zero",
        ),
    ],
    ids=["hardlink-inside", "symlink-inside", "fifo", "device"],
)
def test_members_other_than_files_and_folders_are_refused(tmp_path, archives, entries, message):
    bad = {**archives, "annotations.tar.gz": tar_gz_entries(entries)}
    with Mirror(bad) as mirror:
        with pytest.raises(UserError, match=re.escape(message)):
            download(tmp_path / "pets", Source(mirror.url, md5s(bad), **FAST_RETRIES))
    assert sorted(p.name for p in tmp_path.iterdir()) == [".pets.downloads"]


@pytest.mark.parametrize(
    "content",
    [
        '{"../../../tmp/x": "%s", "annotations.tar.gz": "%s"}',
        '{"/tmp/x": "%s", "annotations.tar.gz": "%s"}',
        '{"images.tar.gz": "%s", "annotations.tar.gz": "%s", "extra.tar.gz": "%s"}',
        '{"images.tar.gz": "%s"}',
        "{}",
        '["images.tar.gz", "annotations.tar.gz"]',
        "5",
    ],
    ids=["dotdot-key", "absolute-key", "extra-key", "one-key", "empty", "list", "number"],
)
def test_a_checksums_file_names_exactly_the_two_archives(tmp_path, capsys, content):
    checksums = tmp_path / "checksums.json"
    checksums.write_text(content.replace("%s", "0" * 32))
    code, stderr = run_main(
        "--root",
        str(tmp_path / "pets"),
        "--base-url",
        "http://127.0.0.1:9/",
        "--checksums",
        str(checksums),
        capsys=capsys,
    )
    assert code == 2 and len(stderr) == 1, stderr
    assert stderr[0].startswith(
        f'error: --checksums {checksums}: expected a JSON object {{"images.tar.gz": digest, '
    )
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "checksums.json"
    ]  # nothing fetched, nothing written


@pytest.mark.parametrize("digest", ["z" * 32, "0" * 31, 12345])
def test_a_checksum_that_is_not_a_digest_is_one_line(tmp_path, capsys, digest):
    checksums = tmp_path / "checksums.json"
    checksums.write_text(json.dumps({"images.tar.gz": digest, "annotations.tar.gz": "0" * 32}))
    code, stderr = run_main("--root", str(tmp_path / "pets"), "--checksums", str(checksums), capsys=capsys)
    assert code == 2 and len(stderr) == 1, stderr
    assert (
        "images.tar.gz: " in stderr[0]
        and "is neither an md5 (32 hex digits) nor a sha256 (64) digest" in stderr[0]
    )


def test_an_archive_that_expands_past_the_caps_is_refused(tmp_path, archives, capsys):
    # 2 MB of zeros in a few kilobytes: a small decompression bomb, with caps to match.
    bomb = {**archives, "images.tar.gz": tar_gz({"images/zeros.jpg": bytes(2_000_000)})}
    checksums = tmp_path / "checksums.json"
    checksums.write_text(json.dumps(md5s(bomb)))
    assert len(bomb["images.tar.gz"]) < 10_000
    with Mirror(bomb) as mirror:
        code, stderr = run_main(
            "--root", str(tmp_path / "pets"), "--base-url", mirror.url, "--checksums", str(checksums),
            "--max-member-mb", "1", capsys=capsys,
        )  # fmt: skip
        assert code == 2 and len(stderr) == 1, stderr
        assert stderr[0] == (
            "error: images.tar.gz expands to more than its cap (1 MB per file, 8 GB in all) at images/zeros.jpg: "
            "refused; raise --max-member-mb or --max-extracted-gb if the archive is trusted"
        )
        many = {**archives, "images.tar.gz": tar_gz({f"images/{i}.jpg": bytes(400_000) for i in range(5)})}
        mirror.files = many
        with pytest.raises(UserError, match=r"images.tar.gz expands to more than its cap .* at images/3.jpg"):
            download(
                tmp_path / "pets",
                Source(mirror.url, md5s(many), **FAST_RETRIES, max_extracted_bytes=1_500_000),
            )
    assert not (tmp_path / "pets").exists() and not (tmp_path / ".pets.staging").exists()
