"""What a run prints at start reads whole in a log."""

from cats_model.config import compose_train_config
from cats_model.console import print_config_tree


def test_config_tree_lines_are_not_cut_when_output_is_not_a_terminal(tmp_path, capsys):
    deep = tmp_path / ("a-folder-name-long-enough-to-pass-eighty-columns-" * 3) / "pets"
    print_config_tree(compose_train_config([f"data.root={deep}"], tmp_path))
    printed = capsys.readouterr().out
    assert any(line.rstrip().endswith(f"root: {deep}") for line in printed.splitlines()), printed
