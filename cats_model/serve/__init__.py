"""Serving a trained model over HTTP: `python -m cats_model.serve MODEL` (see __main__.py)."""
