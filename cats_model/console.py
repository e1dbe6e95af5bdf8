"""What a run prints at start: the composed config as a tree."""

import sys

from omegaconf import DictConfig, OmegaConf
from rich.console import Console
from rich.syntax import Syntax
from rich.tree import Tree

ORDER = ("data", "model", "optimizer", "scheduler", "trainer", "callbacks", "logger", "paths")


def print_config_tree(cfg: DictConfig) -> None:
    tree = Tree("config", guide_style="dim")
    keys = [k for k in ORDER if k in cfg] + [k for k in cfg if k not in ORDER and k != "hydra"]
    for key in keys:
        node = cfg[key]
        text = OmegaConf.to_yaml(node, resolve=True) if OmegaConf.is_config(node) else str(node)
        tree.add(f"[bold]{key}[/bold]").add(
            Syntax(text.rstrip(), "yaml", theme="ansi_dark", background_color="default")
        )
    # A terminal's width wraps the tree; a log (not a terminal) has none, so no line is cut at Rich's default 80.
    console = Console() if sys.stdout.isatty() else Console(width=100_000)
    console.print(tree)
