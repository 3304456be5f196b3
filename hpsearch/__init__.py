"""hpsearch: hyperparameter search for deep learning on GPU fleets, built on Optuna."""

from __future__ import annotations

__version__ = "0.1.0"
__all__ = ["__version__"]
