"""transformers' distributed engine on scratchformer: what its plans cannot say.

    model = AutoModelForCausalLM.from_pretrained(folder, trust_remote_code=True,
                                                 distributed_config=DistributedConfig(fsdp_size=2))   # or tp_size, pp_size

transformers shards a model by the plans it declares, as Llama declares its own: `ScratchformerConfig`'s
`base_model_tp_plan`, `base_model_fsdp_plan` and `base_model_pp_plan` for the bare model, and each head's `_tp_plan`,
`_fsdp_plan` and `_pp_plan`. This file adds the two things a plan cannot express:

- refusals, with one clear message, of what would run and be wrong: tensor parallelism splits attention by heads,
  so `num_attention_heads` must divide by `tp_size`; pipeline stages pass one stack's hidden states on and return
  a causal LM's logits and cache, so they apply to the causal LM only (the head with a `_pp_plan`);
- the pipeline stages' two differences from Llama. transformers keeps a share of `layers` in each process and hands
  a stage's output to the next one as `inputs_embeds`; Llama adds nothing to `inputs_embeds` and names its final
  norm `norm`. Ours adds position vectors (and dropout, and bigram vectors) in `embeddings` and names the final
  norm `final_norm`: a later stage would add positions a second time, an earlier one would normalise too soon.
  So a later stage's `embeddings` passes what it receives through, and so does an earlier stage's final norm (their
  weights stay and load, so loading reports nothing missing or unexpected);
- for an encoder-decoder under FSDP2, the gathering of the encoder's weights before generate() runs it: FSDP2 gathers
  the weights of the top-level unit in the model's forward, and generate() calls the encoder on its own first.
"""

from torch import nn


def check_distributed_config(model: nn.Module, distributed_config) -> None:
    """Refuse a DistributedConfig that transformers would apply to this model and get wrong."""
    if distributed_config is None:
        return
    config = model.config
    tp_size = distributed_config.tp_size or 1
    if tp_size > 1 and config.num_attention_heads % tp_size:
        raise ValueError(
            f"Tensor parallelism splits attention by heads: num_attention_heads={config.num_attention_heads} is not "
            f"divisible by tp_size={tp_size}"
        )
    if (distributed_config.pp_size or 1) > 1 and not type(model)._pp_plan:
        raise ValueError(
            f"{type(model).__name__} has no pipeline-parallel plan: transformers' pipeline stages pass one stack's "
            "hidden states on and return a causal LM's logits and cache, which fits ScratchformerForCausalLM only; "
            "shard this model with tp_size or fsdp_size instead"
        )


def pass_received_hidden_states(input_ids=None, position_ids=None, inputs_embeds=None):
    """A later pipeline stage's embeddings: what it receives is the previous stage's output, already embedded."""
    return inputs_embeds


def pass_through(hidden_states):
    """An earlier pipeline stage's final norm: the next stage continues the residual stream as it is."""
    return hidden_states


def gather_before_encoding(model: nn.Module) -> nn.Module:
    """An FSDP2-sharded encoder-decoder's get_encoder() (what generate() runs first) gathers the top-level unit's
    weights, as the model's own forward would."""
    if not (model.config.is_encoder_decoder and getattr(model, "_is_fsdp_managed_module", False)):
        return model
    get_encoder = model.get_encoder

    def get_gathered_encoder(*args, **kwargs):
        model.unshard()
        return get_encoder(*args, **kwargs)

    model.get_encoder = get_gathered_encoder
    return model


def adapt_pipeline_stage(model: nn.Module) -> nn.Module:
    """After transformers has divided the blocks between pipeline stages (model._pp_stage), fix the stage's ends."""
    stage = getattr(model, "_pp_stage", None)
    if stage is None:
        return model
    stack = model.base_model
    # The forwards change, not the modules: the last stage's tied LM head shares the token table, for one.
    if not stage.pp_is_first_stage:
        stack.embeddings.forward = pass_received_hidden_states
    if not stage.pp_is_last_stage:
        stack.final_norm.forward = pass_through
    return model


def drop_stack_rules(model: nn.Module) -> None:
    """An encoder-decoder's plans without the config's base rules: those are its two stacks' (they arrive prefixed
    `encoder.` and `decoder.`), and the model itself is no stack, so unprefixed they would match nothing."""
    for plan, stack_plan in ((model._tp_plan, model.config.base_model_tp_plan),
                             (model._fsdp_plan, model.config.base_model_fsdp_plan),
                             (model._pp_plan, model.config.base_model_pp_plan)):
        for rule in stack_plan:
            plan.pop(rule, None)
