"""How the training engine talks to a model: one small adapter per model family."""

from .base import ModelAdapter, PreviewRequest

__all__ = ["ModelAdapter", "PreviewRequest"]
