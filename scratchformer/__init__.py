"""scratchformer: a Transformer written from scratch, registered as the transformers model type `scratchformer`."""

from transformers import (
    AutoConfig,
    AutoModel,
    AutoModelForCausalLM,
    AutoModelForMaskedLM,
    AutoModelForSeq2SeqLM,
    AutoModelForSequenceClassification,
)

from .configuration_scratchformer import ScratchformerConfig
from .modeling_scratchformer import (
    ScratchformerForCausalLM,
    ScratchformerForConditionalGeneration,
    ScratchformerForMaskedLM,
    ScratchformerForSequenceClassification,
    ScratchformerModel,
    ScratchformerPreTrainedModel,
)
from .tokenization import train_tokenizer

__version__ = "0.1.0"

# Registration with the Auto classes, and with auto_map so saved folders carry the code (trust_remote_code).
_HEADS = {
    AutoModel: ScratchformerModel,
    AutoModelForCausalLM: ScratchformerForCausalLM,
    AutoModelForSequenceClassification: ScratchformerForSequenceClassification,
    AutoModelForMaskedLM: ScratchformerForMaskedLM,
    AutoModelForSeq2SeqLM: ScratchformerForConditionalGeneration,
}
AutoConfig.register(ScratchformerConfig.model_type, ScratchformerConfig, exist_ok=True)
ScratchformerConfig.register_for_auto_class()
for _auto_class, _model_class in _HEADS.items():
    _auto_class.register(ScratchformerConfig, _model_class, exist_ok=True)
    _model_class.register_for_auto_class(_auto_class.__name__)

__all__ = [
    "ScratchformerConfig",
    "ScratchformerPreTrainedModel",
    "ScratchformerModel",
    "ScratchformerForCausalLM",
    "ScratchformerForSequenceClassification",
    "ScratchformerForMaskedLM",
    "ScratchformerForConditionalGeneration",
    "train_tokenizer",
]
