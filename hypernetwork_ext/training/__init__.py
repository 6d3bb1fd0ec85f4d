"""Training hypernetworks: settings, schedules, the dataset and the engine. Knows no WebUI."""

from .engine import Callbacks, LossPoint, ModelInfo, Prepared, TrainingError, TrainingResult, prepare, train
from .settings import CosineSettings, PreviewSettings, TimestepSettings, TrainingSettings

__all__ = ["Callbacks", "CosineSettings", "LossPoint", "ModelInfo", "Prepared", "PreviewSettings", "TrainingError",
           "TimestepSettings", "TrainingResult", "TrainingSettings", "prepare", "train"]
