"""What the model declares to the libraries around it: PEFT's default LoRA targets, and loading errors worth naming.

ScratchformerPreTrainedModel (modeling_scratchformer.py) calls these from post_init and from_pretrained.
"""

import sys

from safetensors import SafetensorError

# What LoRA adapts when a user names no target_modules: the query and value projections, PEFT's default for Llama.
LORA_TARGET_MODULES = ["q_proj", "v_proj"]


def declare_lora_target_modules() -> None:
    """Enter this model type in PEFT's table of default LoRA targets (PEFT keys it by model_type), if PEFT is
    loaded; importing PEFT just for this would cost every user two seconds."""
    constants = sys.modules.get("peft.utils.constants")
    if constants is not None:
        constants.TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING.setdefault("scratchformer", LORA_TARGET_MODULES)


def naming_corrupt_weights(load, pretrained_model_name_or_path, *args, **kwargs):
    """load(...) (transformers' from_pretrained), with a corrupt or truncated weights file reported as such."""
    try:
        return load(pretrained_model_name_or_path, *args, **kwargs)
    except SafetensorError as error:
        raise OSError(
            f"The weights file (model.safetensors) of {pretrained_model_name_or_path} is corrupt or truncated "
            f"({error}); save or download it again."
        ) from error
