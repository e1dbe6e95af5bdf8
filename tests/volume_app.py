"""A small Modal app for testing the offline service's volumes with the real client (tests/test_modal_service.py)."""

import os
from pathlib import Path

import modal

app = modal.App("volume-probe", image=modal.Image.debian_slim().env({"PROBE_DIR": "/probe"}))
volume = modal.Volume.from_name("probe", create_if_missing=True)


def folder() -> Path:
    return Path(os.environ["PROBE_DIR"])


@app.function(volumes={"/probe": volume})
def write(name: str, text: str) -> None:
    (folder() / name).write_text(text)
    volume.commit()


@app.function(volumes={"/probe": volume})
def reload_then_read(name: str) -> str:
    volume.reload()
    return (folder() / name).read_text()


@app.function(volumes={"/probe": volume})
def reload_with_a_file_open(name: str) -> str:
    with open(folder() / name) as held:
        try:
            volume.reload()
        except RuntimeError as err:
            return str(err)
        return held.read()
