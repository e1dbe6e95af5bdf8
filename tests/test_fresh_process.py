"""A local sweep job's fresh process: it imports what its function needs, not the entry point that started it."""

import os
import subprocess
import sys

import pytest

from cats_model.fresh_process import ProcessDied, in_fresh_process


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


def test_the_functions_exception_is_raised_here_and_a_process_that_dies_says_so():
    with pytest.raises(ValueError, match="invalid literal"):
        in_fresh_process(int, "not a number")
    with pytest.raises(ProcessDied, match=r"_exit ended \(exit status 3\) without a result"):
        in_fresh_process(os._exit, 3)
