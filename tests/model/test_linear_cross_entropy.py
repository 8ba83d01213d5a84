"""The training loss's chunked pass (scratchformer/linear_cross_entropy.py) against the plain output layer + loss."""

import gc
import weakref

import pytest
import torch
from conftest import tiny_config
from test_seq2seq import seq2seq_config

import scratchformer.linear_cross_entropy as chunked
import scratchformer.linear_cross_entropy as loss_paths
from scratchformer import ScratchformerForCausalLM, ScratchformerForConditionalGeneration


def padded_inputs(head):
    torch.manual_seed(1)
    ids = torch.randint(5, 400, (3, 11))
    mask = torch.ones_like(ids)
    mask[1, 8:] = 0
    labels = ids.masked_fill(mask == 0, -100)
    if head is ScratchformerForConditionalGeneration:
        return dict(input_ids=ids, attention_mask=mask, labels=labels[:, 2:].contiguous()), mask[:, 2:]
    return dict(input_ids=ids, attention_mask=mask, labels=labels), mask


def loss_logits_and_gradients(model, inputs, real, fused, monkeypatch, logits_term=False, **loss_kwargs):
    """One training forward + backward, with the chunked pass allowed or not."""
    with monkeypatch.context() as patch:
        if not fused:
            patch.setattr(loss_paths, "fused_loss_applies", lambda *args: False)
        model.zero_grad()
        out = model(**inputs, **loss_kwargs)
        assert (out.loss.grad_fn.name() == "LinearCrossEntropyBackward") == fused  # the path asked for was taken
        total = out.loss + (out.logits[real.bool()].square().mean() if logits_term else 0)  # e.g. distillation
        total.backward()
    gradients = {name: p.grad.clone() for name, p in model.named_parameters() if p.grad is not None}
    return out.loss.detach(), out.logits.detach()[real.bool()], gradients


@pytest.mark.parametrize("head", [ScratchformerForCausalLM, ScratchformerForConditionalGeneration], ids=["causal", "seq2seq"])
@pytest.mark.parametrize("loss_kwargs, logits_term", [
    ({}, False),
    ({"num_items_in_batch": 7}, False),  # gradient accumulation: a sum over the whole accumulated batch's count
    ({}, True),  # a gradient reaches the logits as well as the loss
], ids=["mean", "num-items", "logits-used"])
def test_the_chunked_training_loss_equals_the_plain_loss_logits_and_gradients(head, loss_kwargs, logits_term, monkeypatch):
    """Softmax chunks of 2 rows (a remainder included), padding ignored, the tied output layer's weight trained through
    both the embeddings and the logits: the same loss, logits and gradients of every parameter."""
    torch.manual_seed(0)
    config = seq2seq_config() if head is ScratchformerForConditionalGeneration else tiny_config(pad_token_id=0)
    model = head(config.__class__(**{**config.to_dict(), "hidden_dropout_prob": 0.0})).train()
    inputs, real = padded_inputs(head)
    monkeypatch.setattr(chunked, "CHUNK_ELEMENTS", 2 * config.vocab_size)
    expected = loss_logits_and_gradients(model, inputs, real, False, monkeypatch, logits_term, **loss_kwargs)
    got = loss_logits_and_gradients(model, inputs, real, True, monkeypatch, logits_term, **loss_kwargs)
    torch.testing.assert_close(got, expected)


def test_confidently_wrong_rows_keep_the_exact_loss(monkeypatch):
    """Logits hundreds apart: a target's probability underflows fp32 (the softmax-based loss would be inf); those rows
    take logsumexp instead, and the loss and gradients still equal the plain path's."""
    torch.manual_seed(0)
    model = ScratchformerForCausalLM(tiny_config(pad_token_id=0, hidden_dropout_prob=0.0)).train()
    with torch.no_grad():
        model.lm_head.weight.mul_(1000)
    inputs, real = padded_inputs(ScratchformerForCausalLM)
    expected = loss_logits_and_gradients(model, inputs, real, False, monkeypatch)
    got = loss_logits_and_gradients(model, inputs, real, True, monkeypatch)
    assert expected[0] > 200  # some targets really are that improbable
    torch.testing.assert_close(got, expected)


@pytest.mark.parametrize("logits_term", [False, True], ids=["loss", "logits-used"])
def test_a_frozen_output_layer_gets_no_gradient_and_the_rest_the_plain_ones(logits_term, monkeypatch):
    """Frozen tied embeddings (as PEFT's LoRA leaves them): no gradient for them, the plain path's for the rest."""
    torch.manual_seed(0)
    model = ScratchformerForCausalLM(tiny_config(pad_token_id=0, hidden_dropout_prob=0.0)).train()
    model.lm_head.weight.requires_grad_(False)
    inputs, real = padded_inputs(ScratchformerForCausalLM)
    expected = loss_logits_and_gradients(model, inputs, real, False, monkeypatch, logits_term)
    got = loss_logits_and_gradients(model, inputs, real, True, monkeypatch, logits_term)
    assert "lm_head.weight" not in got[2] and "model.embeddings.token_embeddings.weight" not in got[2]
    torch.testing.assert_close(got, expected)


def test_shift_labels_are_used_as_given(monkeypatch):
    """transformers' `shift_labels` (labels already aligned with the positions, e.g. from a packing collator) are
    scored as they are, as its ForCausalLMLoss does."""
    torch.manual_seed(0)
    model = ScratchformerForCausalLM(tiny_config(pad_token_id=0, hidden_dropout_prob=0.0)).train()
    inputs, real = padded_inputs(ScratchformerForCausalLM)
    shift_labels = torch.randint(0, 400, inputs["labels"].shape).masked_fill(real == 0, -100)
    expected = loss_logits_and_gradients(model, inputs, real, False, monkeypatch, shift_labels=shift_labels)
    got = loss_logits_and_gradients(model, inputs, real, True, monkeypatch, shift_labels=shift_labels)
    torch.testing.assert_close(got, expected)


def test_the_plain_path_stays_where_the_chunked_pass_cannot_stand_in():
    """Evaluation (logits only), a hooked output layer (PEFT, offloading) and autocast keep the module call and
    transformers' loss."""
    torch.manual_seed(0)
    model = ScratchformerForCausalLM(tiny_config(pad_token_id=0)).train()
    inputs, _ = padded_inputs(ScratchformerForCausalLM)
    assert model(**inputs).loss.grad_fn.name() == "LinearCrossEntropyBackward"
    with torch.no_grad():
        assert model(**inputs).loss.grad_fn is None
    handle = model.lm_head.register_forward_hook(lambda module, args, out: None)
    assert model(**inputs).loss.grad_fn.name() != "LinearCrossEntropyBackward"
    handle.remove()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert model(**inputs).loss.grad_fn.name() != "LinearCrossEntropyBackward"


def test_a_label_outside_the_vocabulary_is_one_clear_error():
    model = ScratchformerForCausalLM(tiny_config(pad_token_id=0)).train()
    inputs, _ = padded_inputs(ScratchformerForCausalLM)
    inputs["labels"][0, 3] = 400
    with pytest.raises(ValueError, match=r"labels contains 400, outside the vocabulary \[0, 400\)"):
        model(**inputs)


def test_a_training_step_reuses_the_last_steps_logits_memory_only_when_nothing_holds_it():
    """The logits and d loss / d logits are kept between training steps (too large for the heap: fresh ones are
    page-faulted in each step). A step reuses the logits' memory when its caller let go of the last outputs, and takes
    new memory while any output, logits or view of them is still held, whose values then stay intact; the gradient,
    never handed out, is always reused. The kept tensors carry no autograd history."""
    torch.manual_seed(0)
    model = ScratchformerForCausalLM(tiny_config(pad_token_id=0, hidden_dropout_prob=0.0)).train()
    inputs, _ = padded_inputs(ScratchformerForCausalLM)
    weight = model.lm_head.weight

    def step():
        out = model(**inputs)
        assert out.loss.grad_fn.name() == "LinearCrossEntropyBackward"
        out.loss.backward()
        return out

    first = step()
    first_logits, first_address = first.logits.detach().clone(), first.logits.data_ptr()
    kept = chunked.kept_buffers(weight)
    assert set(kept) == {"logits", "gradient"}
    assert kept["logits"].data_ptr() == first_address
    assert all(tensor.grad_fn is None and not tensor.requires_grad for tensor in kept.values())
    gradient_address = kept["gradient"].data_ptr()
    second = step()  # `first` still held: new memory, and the first step's logits are untouched
    assert second.logits.data_ptr() != first_address
    torch.testing.assert_close(first.logits.detach(), first_logits)
    view = second.logits[:, 1:]  # a view alone holds it too
    second_address = second.logits.data_ptr()
    del first, second
    third = step()
    assert third.logits.data_ptr() not in (first_address, second_address)
    third_address, third_logits = third.logits.data_ptr(), third.logits.detach().clone()
    del view, third
    fourth = step()  # nothing held: the same memory again, with the same values as a fresh computation
    assert fourth.logits.data_ptr() == third_address
    assert chunked.kept_buffers(weight)["gradient"].data_ptr() == gradient_address  # never handed out: always reused
    torch.testing.assert_close(fourth.logits.detach(), third_logits)
    del fourth
    fewer_rows = {key: value[:2] for key, value in inputs.items()}  # another shape: new memory
    assert model(**fewer_rows).logits.data_ptr() != third_address
    # The model's deletion frees what was kept for it.
    kept_now = [weakref.ref(tensor) for tensor in chunked.kept_buffers(weight).values()]
    del weight, kept, model
    gc.collect()
    assert [ref() for ref in kept_now] == [None, None]
