"""What the README's commands leave in the checkout: nothing that `git status` shows."""

import re
import shutil
import subprocess

import pytest

from cats_model.paths import PROJECT_ROOT


def written_by_readme_commands() -> set[str]:
    """The files the README says its commands write into the folder they run in: `--out FILE` (and the sidecar
    JSON beside each .onnx), `writes \\`FILE\\``, and the folder that `fetch` fills."""
    readme = (PROJECT_ROOT / "README.md").read_text()
    files = set(re.findall(r"--out (?!FILE)([\w./-]+)", readme))
    files |= set(re.findall(r"writes `([\w.-]+\.json)`", readme))
    files |= {name.removesuffix(".onnx") + ".json" for name in files if name.endswith(".onnx")}
    files |= {f"{folder}/RUN/metrics.json" for folder in re.findall(r"into `\./(\w+)/RUN/`", readme)}
    return files


def test_git_ignores_what_the_readme_commands_write():
    if shutil.which("git") is None or not (PROJECT_ROOT / ".git").exists():
        pytest.skip("not a git checkout")
    files = written_by_readme_commands()
    assert {"cats.onnx", "cats.json", "cats-int8.onnx", "cats-int8.json", "bench-inference.json"} <= files
    assert "runs/RUN/metrics.json" in files
    checked = subprocess.run(
        ["git", "check-ignore", "--no-index", "--verbose", "--non-matching", *sorted(files)],
        cwd=PROJECT_ROOT, capture_output=True, text=True,
    )  # fmt: skip
    not_ignored = [line.split("\t")[1] for line in checked.stdout.splitlines() if line.startswith("::")]
    assert not not_ignored, f"{not_ignored} would show in git status: add them to .gitignore"
