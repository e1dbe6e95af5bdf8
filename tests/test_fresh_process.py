"""A local sweep job's fresh process: it imports what its function needs, not the entry point that started it, and
hands back the result or the exception."""

import os
import subprocess
import sys

import pytest

from cats_model.fresh_process import ProcessDied, RemoteTraceback, in_fresh_process
from cats_model.paths import PROJECT_ROOT


def test_the_fresh_process_does_not_import_the_parents_main_module_again(tmp_path):
    # An entry point that counts its imports, as `python -m cats_model.train -m` imports torch and Lightning.
    (tmp_path / "entry.py").write_text(
        "import os\n"
        "with open(os.environ['IMPORTS'], 'a') as file:\n"
        "    file.write('imported\\n')\n"
        "from cats_model.fresh_process import in_fresh_process\n"
        "if __name__ == '__main__':\n"
        "    print(in_fresh_process(os.getpid) != os.getpid())\n"
    )
    imports = tmp_path / "imports.txt"
    result = subprocess.run(
        [sys.executable, "-m", "entry"],
        cwd=tmp_path,
        env={**os.environ, "IMPORTS": str(imports)},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.stdout.strip() == "True", result.stderr[-2000:]  # another process answered
    assert imports.read_text() == "imported\n"  # by the parent alone


def test_the_function_is_found_where_this_process_finds_it(tmp_path, monkeypatch):
    (tmp_path / "elsewhere.py").write_text("def answer(x):\n    return x * 2\n")
    monkeypatch.syspath_prepend(str(tmp_path))  # a folder this process added: not on the child's own path
    import elsewhere

    assert in_fresh_process(elsewhere.answer, 21) == 42


class TwoArguments(Exception):
    def __init__(self, a, b):
        super().__init__(f"{a} and {b}")


def fails_with_two_arguments():
    raise TwoArguments("this", "that")


def test_the_functions_exception_is_raised_here_with_the_childs_traceback():
    with pytest.raises(ValueError, match="invalid literal") as raised:
        in_fresh_process(int, "not a number")
    assert isinstance(raised.value.__cause__, RemoteTraceback)
    assert "ValueError: invalid literal" in str(raised.value.__cause__)
    # One that pickles but cannot be rebuilt from its arguments comes back as its text.
    with pytest.raises(RuntimeError, match="TwoArguments: this and that"):
        in_fresh_process(fails_with_two_arguments)


def test_a_process_that_dies_says_how():
    with pytest.raises(ProcessDied, match=r"^its process exited with status 3 before it returned$"):
        in_fresh_process(os._exit, 3)


def test_no_module_of_the_package_shadows_the_standard_library_in_the_fresh_process():
    """The child runs cats_model/fresh_process.py as a script: cats_model/ is first on its path while it imports
    the standard library."""
    package = PROJECT_ROOT / "cats_model"
    names = {path.stem for path in package.glob("*.py")} | {
        path.name for path in package.iterdir() if path.is_dir()
    }
    assert not names & set(sys.stdlib_module_names)
