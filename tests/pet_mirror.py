"""A real HTTP mirror on loopback serving Oxford-layout archives built by the tests, with injectable faults."""

import hashlib
import io
import tarfile
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from cats_model.data.synthetic import SyntheticSpec, ensure_synthetic


def tar_gz(members: dict[str, bytes], links: dict[str, str] | None = None) -> bytes:
    """Files, then symbolic links (name -> target)."""
    entries = [(name, tarfile.REGTYPE, data) for name, data in members.items()]
    return tar_gz_entries(
        entries + [(name, tarfile.SYMTYPE, target) for name, target in (links or {}).items()]
    )


def tar_gz_entries(entries: list[tuple[str, bytes, bytes | str]]) -> bytes:
    """Members in order, each (name, tarfile type, file content or link target)."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for name, kind, payload in entries:
            info = tarfile.TarInfo(name)
            info.type = kind
            if isinstance(payload, str):
                info.linkname = payload
            else:
                info.size = len(payload)
            tar.addfile(info, io.BytesIO(payload) if info.size else None)
    return buffer.getvalue()


def oxford_archives(workdir: Path) -> dict[str, bytes]:
    """images.tar.gz and annotations.tar.gz as the real site lays them out, from a small synthetic tree."""
    tree = ensure_synthetic(
        workdir / "source", SyntheticSpec(trainval_per_class=4, test_per_class=2, dog_breeds=2)
    )

    def members(folder):
        return {
            str(p.relative_to(tree)): p.read_bytes()
            for p in sorted((tree / folder).rglob("*"))
            if p.is_file()
        }

    return {"images.tar.gz": tar_gz(members("images")), "annotations.tar.gz": tar_gz(members("annotations"))}


def md5s(archives: dict[str, bytes]) -> dict[str, str]:
    return {name: hashlib.md5(data).hexdigest() for name, data in archives.items()}


class Mirror:
    """Serves `files`; `drop_after[name] = (n_bytes, times)` cuts the connection after n bytes, `times` times."""

    def __init__(self, files: dict[str, bytes]):
        self.files = files
        self.drop_after: dict[str, tuple[int, int]] = {}
        self.requests: list[tuple[str, str | None]] = []  # (path, Range header)
        mirror = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_GET(self):
                name = self.path.rsplit("/", 1)[-1]
                mirror.requests.append((self.path, self.headers.get("Range")))
                if name not in mirror.files:
                    self.send_error(404)
                    return
                data, start = mirror.files[name], 0
                if (wanted := self.headers.get("Range")) and wanted.startswith("bytes="):
                    start = int(wanted[6:].split("-")[0])
                    if start >= len(data):
                        self.send_error(416)
                        return
                    self.send_response(206)
                    self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
                else:
                    self.send_response(200)
                self.send_header("Content-Length", str(len(data) - start))
                self.end_headers()
                cut, times = mirror.drop_after.get(name, (None, 0))
                if times:
                    mirror.drop_after[name] = (cut, times - 1)
                    self.wfile.write(data[start : start + cut])
                    self.wfile.flush()
                    self.close_connection = True
                    return
                self.wfile.write(data[start:])

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/pets"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.server.shutdown()
        self.server.server_close()
