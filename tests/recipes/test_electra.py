"""`--pretrain electra` (training/electra.py): the generator's samples replace the masked tokens, the discriminator
learns which were replaced, and only the discriminator is kept, as a folder the classifier starts from. (The recipe
run on real reviews is tests/recipes/test_pretrain.py's; its resumption after kills, test_chaos.py's.)"""

from argparse import Namespace
from dataclasses import replace

import pytest
import torch
from conftest import assert_one_step_trains, assert_saved_alone
from safetensors.torch import save_file
from transformers import DataCollatorForLanguageModeling

from scratchformer import ScratchformerConfig
from training import classify, electra, sources
from training.optimizers import hidden_matrices

MASK, PAD = 3, 0


def tiny_config(**settings) -> ScratchformerConfig:
    defaults = dict(vocab_size=50, hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
                    max_position_embeddings=32, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0,
                    pad_token_id=PAD)
    return ScratchformerConfig(**{**defaults, **settings})


def test_the_samples_replace_the_masked_tokens_and_only_changed_tokens_count_as_replaced():
    # The collator put [MASK] at position 1, a random token (10) at 3 and kept the original (7) at 2 (all masked).
    input_ids = torch.tensor([[5, MASK, 7, 10, 11, PAD]])
    labels = torch.tensor([[-100, 6, 7, 9, -100, -100]])
    sampled = torch.tensor([6, 8, 9])  # the generator: right at 1 and 3, wrong at 2
    corrupted, replaced = electra.replace_masked_tokens(input_ids, labels, sampled)
    assert corrupted.tolist() == [[5, 6, 8, 9, 11, PAD]]  # the collator's [MASK] and random token are gone
    assert replaced.tolist() == [[0, 0, 1, 0, 0, 0]]  # a sample equal to the original is original


def test_the_generator_is_narrower_untied_and_its_vocabulary_layer_stays_out_of_muon(tmp_path):
    config = tiny_config()
    model = electra.ReplacedTokenDetection(config)
    generator = model.generator.config
    assert (generator.hidden_size, generator.intermediate_size, generator.num_hidden_layers) == (16, 32, 2)
    assert generator.head_dim == config.head_dim and generator.sparse_prediction
    assert model.get_output_embeddings().weight is not model.generator.get_input_embeddings().weight
    save_file(model.state_dict(), tmp_path / "model.safetensors")  # no shared tensors: Trainer's checkpoint format
    muon = {id(p) for p in hidden_matrices(model)}
    assert id(model.get_output_embeddings().weight) not in muon and id(model.classifier.weight) not in muon
    assert id(model.dense.weight) in muon and id(model.discriminator.layers[0].mlp.fc_in.weight) in muon
    with pytest.raises(ValueError, match="bidirectional"):  # a causal discriminator is refused
        electra.ReplacedTokenDetection(tiny_config(is_decoder=True))


def test_a_training_step_on_collated_batches_trains_both_models_and_saves_the_discriminator_alone(tmp_path):
    from scratchformer import train_tokenizer

    tokenizer = train_tokenizer(["a small corpus of words for a tokenizer, with more words"] * 20, vocab_size=300)
    config = tiny_config(vocab_size=len(tokenizer), pad_token_id=tokenizer.pad_token_id)
    torch.manual_seed(0)
    model = electra.ReplacedTokenDetection(config)
    texts = ["a small corpus of words", "words for a tokenizer, with more words and more words"]
    collator = DataCollatorForLanguageModeling(tokenizer, mlm=True, mlm_probability=0.5)
    batch = collator([{"input_ids": ids} for ids in tokenizer(texts)["input_ids"]])
    output = model(**batch)
    assert torch.allclose(output["loss"], output["generator_loss"] + electra.DETECTION_LOSS_WEIGHT
                          * output["detection_loss"])
    assert_one_step_trains(model, output["loss"],
                           ("generator.model.layers.0.", "discriminator.layers.1.", "dense.", "classifier."))
    assert not assert_saved_alone(model.save_transformer, tmp_path / "discriminator", model.discriminator).is_decoder


def test_electra_across_processes_is_refused_before_any_work_naming_the_flags():
    def flags(chosen, distributed, **preset):
        return Namespace(init_from=None, pretrain=chosen, distributed=distributed,
                         preset_values=replace(classify.PRESETS["tiny"], **preset))

    with pytest.raises(sources.DataError, match="--pretrain electra .* --distributed fsdp=2"):
        classify.check_pretraining_flags(flags("electra", "fsdp=2"))
    with pytest.raises(sources.DataError, match="--distributed fsdp=2"):  # a preset's own ELECTRA pre-training
        classify.check_pretraining_flags(flags(None, "fsdp=2", pretrain="electra"))
    classify.check_pretraining_flags(flags("lm", "fsdp=2"))
    classify.check_pretraining_flags(flags("electra", None))
    classify.check_pretraining_flags(flags(None, "fsdp=2", pretrain="electra", pretrain_epochs=0.0))


def test_sampling_draws_tokens_as_often_as_the_generator_predicts_them_and_never_impossible_ones():
    torch.manual_seed(0)
    probabilities = torch.tensor([0.6, 0.3, 0.1, 0.0])
    logits = probabilities.log().expand(40_000, 4)  # log(0) = -inf: a token the generator rules out
    counts = torch.bincount(electra.sample(logits), minlength=4).float() / 40_000
    assert torch.allclose(counts, probabilities, atol=0.01) and counts[3] == 0
