"""The model's maths: attention backends agree, masks and positions behave, pooling, outputs, bad input."""

import pytest
import torch
from conftest import tiny_config

from scratchformer import (
    ScratchformerForCausalLM,
    ScratchformerForMaskedLM,
    ScratchformerForSequenceClassification,
    ScratchformerModel,
)
from scratchformer.modeling_scratchformer import eager_attention_forward, pool, sinusoidal_table

HEADS = [ScratchformerModel, ScratchformerForCausalLM, ScratchformerForSequenceClassification, ScratchformerForMaskedLM]
VARIANTS = [
    dict(position_embedding_type="learned"),
    dict(position_embedding_type="sinusoidal", norm_placement="post"),
    dict(position_embedding_type="rotary"),
    dict(position_embedding_type="rotary", is_decoder=True, classifier_pooling="last"),
]


def first_output(out):
    return out.logits if hasattr(out, "logits") else out.last_hidden_state


def batch_with_padding(vocab_size=400):
    input_ids = torch.randint(5, vocab_size, (3, 9))
    attention_mask = torch.ones_like(input_ids)
    attention_mask[1, 6:] = 0  # right padding
    attention_mask[2, :3] = 0  # left padding
    return input_ids, attention_mask


@pytest.mark.parametrize("head", HEADS)
@pytest.mark.parametrize("variant", VARIANTS, ids=lambda v: "-".join(map(str, v.values())))
def test_eager_and_sdpa_give_the_same_outputs(head, variant):
    model = head(tiny_config(**variant)).eval()
    input_ids, attention_mask = batch_with_padding()
    outputs = {}
    for backend in ("eager", "sdpa"):
        model.set_attn_implementation(backend)
        with torch.no_grad():
            out = first_output(model(input_ids, attention_mask=attention_mask))
        keep = attention_mask.bool() if out.dim() == 3 else slice(None)  # padded positions may differ: ignore them
        outputs[backend] = out[keep]
    torch.testing.assert_close(outputs["eager"], outputs["sdpa"], atol=1e-5, rtol=1e-4)


def test_eager_attention_matches_the_formula():
    q, k, v = (torch.randn(2, 3, 5, 8) for _ in range(3))
    mask = torch.zeros(2, 1, 5, 5)
    mask[..., -1] = torch.finfo(torch.float32).min  # hide the last key
    module = torch.nn.Module().eval()
    out, weights = eager_attention_forward(module, q, k, v, mask, scaling=8**-0.5)
    expected_weights = torch.softmax(q @ k.transpose(-1, -2) / 8**0.5 + mask, dim=-1)
    torch.testing.assert_close(weights, expected_weights)
    torch.testing.assert_close(out, (expected_weights @ v).transpose(1, 2))
    assert torch.all(weights[..., -1] == 0)


@pytest.mark.parametrize("is_decoder", [False, True])
def test_attention_weights_are_returned_with_masking_visible(is_decoder):
    model = ScratchformerModel(tiny_config(is_decoder=is_decoder)).eval()
    model.set_attn_implementation("eager")
    input_ids, attention_mask = batch_with_padding()
    out = model(input_ids, attention_mask=attention_mask, output_attentions=True, output_hidden_states=True)
    assert len(out.attentions) == 2 and len(out.hidden_states) == 3  # embeddings + one per block
    weights = out.attentions[0]
    assert weights.shape == (3, 4, 9, 9)
    real_rows = attention_mask.bool()[:, None, :, None].expand_as(weights)
    torch.testing.assert_close(weights.sum(-1)[real_rows[..., 0]], torch.ones(int(real_rows[..., 0].sum())))
    assert torch.all(weights[1, :, :6, 6:] == 0)  # nobody attends to right padding
    assert torch.all(weights[2, :, 3:, :3] == 0)  # nor to left padding
    future = torch.triu(torch.ones(9, 9, dtype=torch.bool), diagonal=1)
    assert torch.all(weights[0][:, future] == 0) == is_decoder


def test_causal_model_output_does_not_depend_on_future_tokens():
    model = ScratchformerModel(tiny_config(is_decoder=True)).eval()
    ids = torch.randint(5, 400, (1, 10))
    changed = ids.clone()
    changed[0, 7:] = 5
    a, b = model(ids).last_hidden_state, model(changed).last_hidden_state
    torch.testing.assert_close(a[:, :7], b[:, :7])
    assert not torch.allclose(a[:, 7:], b[:, 7:])


@pytest.mark.parametrize("position_embedding_type", ["learned", "sinusoidal", "rotary"])
def test_positions_make_order_matter(position_embedding_type):
    model = ScratchformerModel(tiny_config(position_embedding_type=position_embedding_type)).eval()
    ids = torch.tensor([[10, 20, 30, 40]])
    out = model(ids).last_hidden_state
    swapped = model(ids[:, [1, 0, 2, 3]]).last_hidden_state
    assert not torch.allclose(out[:, 0], swapped[:, 1], atol=1e-4)


def test_sinusoidal_table_is_the_papers_formula():
    table = sinusoidal_table(50, 16)
    pos, i = 7, 3
    angle = pos / 10000 ** (2 * i / 16)
    assert table[pos, 2 * i].item() == pytest.approx(torch.tensor(angle).sin().item(), abs=1e-6)
    assert table[pos, 2 * i + 1].item() == pytest.approx(torch.tensor(angle).cos().item(), abs=1e-6)


@pytest.mark.parametrize("how", ["mean", "max", "cls", "last"])
def test_pooling_reads_only_real_tokens(how):
    hidden = torch.randn(2, 5, 4)
    mask = torch.tensor([[1, 1, 1, 0, 0], [0, 0, 1, 1, 1]])
    pooled = pool(hidden, mask, how)
    real = [hidden[0, :3], hidden[1, 2:]]
    expected = {
        "mean": [r.mean(0) for r in real],
        "max": [r.amax(0) for r in real],
        "cls": [r[0] for r in real],
        "last": [r[-1] for r in real],
    }[how]
    torch.testing.assert_close(pooled, torch.stack(expected))


@pytest.mark.parametrize("pooling", ["mean", "max", "cls", "last"])
def test_classifier_gives_the_same_logits_padded_or_alone(pooling):
    model = ScratchformerForSequenceClassification(tiny_config(classifier_pooling=pooling)).eval()
    ids = torch.randint(5, 400, (1, 6))
    alone = model(ids).logits
    padded_ids = torch.cat([ids, torch.zeros(1, 3, dtype=torch.long)], dim=1)
    padded = model(padded_ids, attention_mask=(padded_ids != 0).long()).logits
    torch.testing.assert_close(alone, padded, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize(
    "num_labels, problem_type, labels",
    [
        (2, None, torch.tensor([0, 1])),
        (1, None, torch.tensor([0.5, -1.0])),
        (3, "multi_label_classification", torch.tensor([[1.0, 0.0, 1.0], [0.0, 1.0, 0.0]])),
    ],
)
def test_classification_losses_match_the_built_in_definitions(num_labels, problem_type, labels):
    model = ScratchformerForSequenceClassification(tiny_config(num_labels=num_labels, problem_type=problem_type))
    out = model(torch.randint(5, 400, (2, 5)), labels=labels)
    if num_labels == 1:
        expected = torch.nn.functional.mse_loss(out.logits.squeeze(), labels)
    elif problem_type == "multi_label_classification":
        expected = torch.nn.functional.binary_cross_entropy_with_logits(out.logits, labels)
    else:
        expected = torch.nn.functional.cross_entropy(out.logits, labels)
    torch.testing.assert_close(out.loss, expected)


def test_causal_lm_loss_is_next_token_cross_entropy():
    model = ScratchformerForCausalLM(tiny_config())
    ids = torch.randint(5, 400, (2, 7))
    out = model(ids, labels=ids)
    expected = torch.nn.functional.cross_entropy(out.logits[:, :-1].reshape(-1, 400), ids[:, 1:].reshape(-1))
    torch.testing.assert_close(out.loss, expected)


def test_sparse_prediction_projects_only_masked_positions_with_the_same_loss():
    dense = ScratchformerForMaskedLM(tiny_config()).eval()
    sparse = ScratchformerForMaskedLM(tiny_config(sparse_prediction=True)).eval()
    sparse.load_state_dict(dense.state_dict())
    input_ids = torch.randint(5, 400, (2, 12))
    labels = torch.full_like(input_ids, -100)
    labels[0, 3], labels[1, 5], labels[1, 9] = 17, 42, 99
    full, only_masked = dense(input_ids, labels=labels), sparse(input_ids, labels=labels)
    assert only_masked.logits.shape == (3, 400)
    torch.testing.assert_close(only_masked.logits, full.logits[labels != -100])
    torch.testing.assert_close(only_masked.loss, full.loss)
    # Without labels (inference, fill-mask) every position is predicted.
    assert sparse(input_ids).logits.shape == (2, 12, 400)


@pytest.mark.parametrize("head, output", [(ScratchformerForCausalLM, "lm_head"), (ScratchformerForMaskedLM, "mlm_head.decoder")])
def test_output_projection_is_tied_to_the_input_embeddings(head, output):
    model = head(tiny_config())
    assert model.get_output_embeddings().weight is model.model.embeddings.token_embeddings.weight
    untied = head(tiny_config(tie_word_embeddings=False))
    assert untied.get_output_embeddings().weight is not untied.model.embeddings.token_embeddings.weight


def test_gradient_checkpointing_gives_the_same_gradients():
    model = ScratchformerForCausalLM(tiny_config())
    ids = torch.randint(5, 400, (2, 8))
    model.train()
    model(ids, labels=ids).loss.backward()
    expected = {n: p.grad.clone() for n, p in model.named_parameters()}
    model.zero_grad()
    model.activation_checkpointing_enable()
    assert all(block.gradient_checkpointing for block in model.model.layers)
    model(ids, labels=ids).loss.backward()
    for name, param in model.named_parameters():
        torch.testing.assert_close(param.grad, expected[name], msg=name)


def test_too_long_input_is_refused():
    model = ScratchformerForCausalLM(tiny_config(max_position_embeddings=16))
    with pytest.raises(ValueError, match="max_position_embeddings=16"):
        model(torch.randint(5, 400, (1, 17)))


@pytest.mark.parametrize("bad_id", [400, 10_000, -1])
def test_token_ids_outside_the_vocabulary_are_refused(bad_id):
    model = ScratchformerForSequenceClassification(tiny_config())
    ids = torch.randint(5, 400, (1, 6))
    ids[0, 3] = bad_id
    with pytest.raises(ValueError, match=f"token id {bad_id}"):
        model(ids)


def test_empty_input_is_refused():
    with pytest.raises(ValueError, match="empty"):
        ScratchformerModel(tiny_config())(torch.zeros(1, 0, dtype=torch.long))


@pytest.mark.parametrize("damage", ["truncate", "garbage", "delete"])
def test_corrupt_or_missing_weights_give_a_clear_error(tmp_path, damage):
    ScratchformerForCausalLM(tiny_config()).save_pretrained(tmp_path)
    weights = tmp_path / "model.safetensors"
    if damage == "truncate":
        weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    elif damage == "garbage":
        weights.write_bytes(b"\x00" * 64)
    else:
        weights.unlink()
    expected = "corrupt or truncated" if damage != "delete" else "model.safetensors"
    with pytest.raises(OSError, match=expected):
        ScratchformerForCausalLM.from_pretrained(tmp_path)
