"""Hydra launcher that runs each multirun job as a call of the project's Modal `train` function.

Hydra imports every plugin module at start-up, so nothing here imports Modal, torch or the project eagerly.
"""
