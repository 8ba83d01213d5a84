"""hub_card: model cards with real results for saved scratchformer folders, and publishing them to the Hub."""

from .card import build_model_card, write_model_card
from .publish import ModelFolderError, PublishResult, publish, validate_model_dir

__all__ = [
    "build_model_card",
    "write_model_card",
    "publish",
    "validate_model_dir",
    "ModelFolderError",
    "PublishResult",
]
