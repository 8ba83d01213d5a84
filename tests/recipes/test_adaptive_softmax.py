"""`--set pretrain_softmax=adaptive` (training/adaptive_softmax.py): a causal LM whose output layer ranks tokens by
frequency into clusters, whose likelihood is exact, and of which only the Transformer is kept. (The recipe run on
real reviews is tests/recipes/test_pretrain.py's.)"""

from argparse import Namespace
from dataclasses import replace

import numpy as np
import pytest
import torch
from conftest import assert_one_step_trains, assert_saved_alone
from safetensors.torch import save_file

from scratchformer import ScratchformerConfig
from training import adaptive_softmax, classify, sources
from training.optimizers import hidden_matrices


def tiny_config(**settings) -> ScratchformerConfig:
    defaults = dict(vocab_size=64, hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
                    max_position_embeddings=32, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0,
                    is_decoder=True, position_embedding_type="rotary")
    return ScratchformerConfig(**{**defaults, **settings})


def zipf_counts(vocab_size: int, seed: int = 0) -> np.ndarray:
    """Token counts falling with rank, the ranks shuffled over the ids (as BPE ids are)."""
    counts = (10_000 / np.arange(1, vocab_size + 1)).astype(np.int64)
    return counts[np.random.default_rng(seed).permutation(vocab_size)]


def test_tokens_are_ranked_by_frequency_and_the_clusters_fit_any_vocabulary():
    ranks = adaptive_softmax.frequency_ranks(np.array([5, 90, 0, 90, 7]))
    assert ranks.tolist() == [3, 0, 4, 1, 2]  # the most frequent first; a tie goes to the lower id
    assert adaptive_softmax.cutoffs_for(16_000, 128) == [2_000, 6_000]
    assert adaptive_softmax.cutoffs_for(16_000, 8) == [2_000]  # a second cluster would be 8 // 16 = 0 wide
    for vocab_size in (3, 8, 400, 50_257):  # what nn.AdaptiveLogSoftmaxWithLoss accepts: increasing, inside (0, V)
        cutoffs = adaptive_softmax.cutoffs_for(vocab_size, 32)
        assert cutoffs == sorted(set(cutoffs)) and all(0 < c < vocab_size for c in cutoffs), vocab_size
        torch.nn.AdaptiveLogSoftmaxWithLoss(32, vocab_size, cutoffs, div_value=adaptive_softmax.DIV_VALUE)


def test_the_loss_is_the_exact_next_token_likelihood_and_padding_is_not_scored():
    torch.manual_seed(0)
    config = tiny_config()
    model = adaptive_softmax.AdaptiveSoftmaxLM(config, zipf_counts(config.vocab_size)).eval()
    input_ids = torch.randint(0, 64, (2, 10))
    labels = input_ids.clone()
    labels[1, 6:] = -100  # the second row's padding
    attention_mask = (labels != -100).long()
    loss = model(input_ids=input_ids, attention_mask=attention_mask, labels=labels)["loss"]
    # By hand: the full distribution at every position, read at the next token's rank.
    hidden = model.transformer(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
    log_probs = model.output.log_prob(hidden[:, :-1].reshape(-1, 32)).view(2, 9, 64)
    assert torch.allclose(log_probs.exp().sum(-1), torch.ones(2, 9), atol=1e-5)  # a distribution over the vocabulary
    targets = labels[:, 1:]
    scored = targets != -100
    picked = log_probs.gather(-1, model.rank[targets.clamp(min=0)].unsqueeze(-1)).squeeze(-1)
    assert scored.sum() == 9 + 5
    assert torch.allclose(loss, -picked[scored].mean(), atol=1e-5)
    with pytest.raises(ValueError, match="labels"):
        model(input_ids=input_ids)


def test_a_step_trains_the_transformer_keeps_the_output_layer_out_of_muon_and_saves_the_transformer_alone(tmp_path):
    torch.manual_seed(0)
    config = tiny_config()
    model = adaptive_softmax.AdaptiveSoftmaxLM(config, zipf_counts(config.vocab_size))
    save_file(model.state_dict(), tmp_path / "model.safetensors")  # no shared tensors: Trainer's checkpoint format
    muon = {id(p) for p in hidden_matrices(model)}
    assert not muon & {id(p) for p in model.output.parameters()}  # the head and every cluster's matrices
    assert id(model.transformer.layers[0].mlp.fc_in.weight) in muon
    input_ids = torch.randint(0, 64, (4, 16))
    assert_one_step_trains(model, model(input_ids=input_ids, labels=input_ids)["loss"],
                           ("transformer.embeddings.", "transformer.layers.0.", "transformer.layers.1.", "output.head."))
    saved = assert_saved_alone(model.save_transformer, tmp_path / "transformer", model.transformer)
    assert saved.is_decoder and saved.position_embedding_type == "rotary"
    with pytest.raises(ValueError, match="is_decoder"):
        adaptive_softmax.AdaptiveSoftmaxLM(tiny_config(is_decoder=False), zipf_counts(64))
    with pytest.raises(ValueError, match="63 token counts"):
        adaptive_softmax.AdaptiveSoftmaxLM(config, zipf_counts(63))


def test_an_unknown_softmax_and_the_adaptive_one_across_processes_are_refused_naming_the_flags():
    def flags(chosen, distributed, **preset):  # each preset value given as --set KEY=VALUE
        return Namespace(init_from=None, pretrain=chosen, distributed=distributed,
                         set=[f"{key}={value}" for key, value in preset.items()],
                         preset_values=replace(classify.PRESETS["tiny"], **preset))

    with pytest.raises(sources.DataError, match="pretrain_softmax=sampled: expected one of full, adaptive"):
        classify.check_pretraining_flags(flags("lm", None, pretrain_softmax="sampled"))
    with pytest.raises(sources.DataError, match="--distributed fsdp=2 .* --set pretrain_softmax=full"):
        classify.check_pretraining_flags(flags("lm", "fsdp=2", pretrain_softmax="adaptive"))
    with pytest.raises(sources.DataError, match="--distributed fsdp=2"):  # a preset's own causal LM
        classify.check_pretraining_flags(flags(None, "fsdp=2", pretrain="lm", pretrain_softmax="adaptive"))
    classify.check_pretraining_flags(flags("lm", None, pretrain_softmax="adaptive"))
    classify.check_pretraining_flags(flags("mlm", "fsdp=2", pretrain_softmax="adaptive"))  # no causal LM: no softmax
    classify.check_pretraining_flags(flags("none", "fsdp=2", pretrain="lm", pretrain_softmax="adaptive"))
    presets_own = flags(None, "fsdp=2", pretrain="lm", pretrain_softmax="adaptive")
    presets_own.set = []  # as cpu-best's: with_pretraining falls back to the full softmax, nothing to refuse
    classify.check_pretraining_flags(presets_own)
