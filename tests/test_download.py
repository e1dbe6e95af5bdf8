"""The Oxford-IIIT Pet download against a real HTTP mirror on loopback: success, faults, and reruns."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from pet_mirror import Mirror, md5s, oxford_archives, tar_gz

from cats_model.data.datamodule import CatBreedsDataModule
from cats_model.download import MARKER, Source, download
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
    assert len(dm.class_names) == 12 and len(dm.splits.test) == 24

    train = subprocess.run(
        [sys.executable, "-m", "cats_model.train", "debug=default", "data=cat_breeds", f"data.root={root}",
         "data.image_size=32", "model=mobilenet_v3_small", "model.pretrained=false", f"hydra.run.dir={tmp_path}/run",
         "callbacks.progress_bar=null"],
        capture_output=True, text=True, timeout=300,
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
