"""Serving a trained model over HTTP: `python -m cats_model.serve MODEL` (see __main__.py)."""

from pathlib import Path

PAGE_DIR = Path(__file__).parent / "page"  # the page's HTML, CSS and JS, served as they are
