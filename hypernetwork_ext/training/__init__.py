"""Training hypernetworks: settings, schedules, the dataset and the engine. Knows no WebUI."""

from .engine import Callbacks, LossPoint, ModelInfo, TrainingError, TrainingResult, train
from .settings import CosineSettings, PreviewSettings, TrainingSettings

__all__ = ["Callbacks", "CosineSettings", "LossPoint", "ModelInfo", "PreviewSettings", "TrainingError",
           "TrainingResult", "TrainingSettings", "train"]
