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
from scratchformer.compat import cache_of
from scratchformer.modeling_scratchformer import ScratchformerMLP, eager_attention_forward, pool, sinusoidal_table
from scratchformer.ngram import bigram_ids, head_and_tail, keep_head_and_tail

HEADS = [ScratchformerModel, ScratchformerForCausalLM, ScratchformerForSequenceClassification, ScratchformerForMaskedLM]
VARIANTS = [
    dict(position_embedding_type="learned"),
    dict(position_embedding_type="sinusoidal", norm_placement="post"),
    dict(position_embedding_type="rotary"),
    dict(position_embedding_type="rotary", is_decoder=True, classifier_pooling="last"),
    dict(position_embedding_type="rotary", bigram_buckets=97),
]


def first_output(out):
    return out.logits if hasattr(out, "logits") else out.last_hidden_state


def batch_with_padding(vocab_size=400, left_padding=True):
    input_ids = torch.randint(5, vocab_size, (3, 9))
    attention_mask = torch.ones_like(input_ids)
    attention_mask[1, 6:] = 0  # right padding
    if left_padding:
        attention_mask[2, :3] = 0
    else:
        attention_mask[2, 4:] = 0
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


@pytest.mark.parametrize("pooling", ["mean", "max", "cls", "last"])
@pytest.mark.parametrize("unpad", [True, False])
def test_a_row_of_padding_only_gets_finite_logits_and_leaves_the_other_rows_alone(pooling, unpad):
    torch.manual_seed(0)
    model = ScratchformerForSequenceClassification(
        tiny_config(classifier_pooling=pooling, unpad_inputs=unpad, pad_token_id=0)).eval()
    input_ids, attention_mask = batch_with_padding()
    expected = model(input_ids, attention_mask=attention_mask).logits
    empty = torch.zeros_like(input_ids[:1])
    logits = model(torch.cat([input_ids, empty]), attention_mask=torch.cat([attention_mask, empty])).logits
    assert torch.isfinite(logits).all()
    torch.testing.assert_close(logits[:-1], expected, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("pooling", ["cls", "last"])
@pytest.mark.parametrize("backend", ["sdpa", "eager"])
@pytest.mark.parametrize("unpad", [True, False])
def test_first_or_last_token_pooling_runs_the_last_block_on_that_token_alone_with_the_same_results(pooling, backend, unpad):
    torch.manual_seed(0)
    config = tiny_config(classifier_pooling=pooling, num_hidden_layers=3, unpad_inputs=unpad, pad_token_id=0)
    model = ScratchformerForSequenceClassification(config).eval()
    model.set_attn_implementation(backend)
    input_ids, attention_mask = batch_with_padding()  # right and left padding
    labels = torch.tensor([0, 1, 1])
    last_mlp_inputs = []
    model.model.layers[-1].mlp.register_forward_hook(lambda module, args, out: last_mlp_inputs.append(args[0].shape))

    def results(logits):
        loss = torch.nn.functional.cross_entropy(logits, labels)
        model.zero_grad()
        loss.backward()
        return logits, {name: p.grad.clone() for name, p in model.named_parameters() if p.grad is not None}

    got = results(model(input_ids, attention_mask=attention_mask).logits)
    assert last_mlp_inputs == [(3, 1, 32)]  # one token per row: the one the pooling reads
    states = model.model(input_ids, attention_mask=attention_mask).last_hidden_state  # every token, then pool
    expected = results(model.classifier(pool(states, attention_mask, pooling)))
    assert last_mlp_inputs[-1] != (3, 1, 32)
    torch.testing.assert_close(got[0], expected[0], atol=1e-5, rtol=1e-4)
    assert got[1].keys() == expected[1].keys()
    for name in got[1]:
        torch.testing.assert_close(got[1][name], expected[1][name], atol=1e-5, rtol=1e-4, msg=name)
    # Asking for every layer's states (or weights) keeps the whole last block.
    last_mlp_inputs.clear()
    model(input_ids, attention_mask=attention_mask, output_hidden_states=True)
    assert last_mlp_inputs[0][:2] != (3, 1)


def test_output_positions_is_refused_where_one_query_cannot_stand_for_its_row():
    model = ScratchformerModel(tiny_config(is_decoder=True))
    with pytest.raises(ValueError, match="output_positions needs a bidirectional stack"):
        model(torch.randint(5, 400, (2, 6)), output_positions=torch.tensor([0, 0]))


def test_inference_logits_take_the_weight_first_matmul_and_equal_the_output_layers():
    from torch.utils._python_dispatch import TorchDispatchMode

    class RecordMatmuls(TorchDispatchMode):
        def __init__(self):
            super().__init__()
            self.shapes = []

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            if func in (torch.ops.aten.mm.default, torch.ops.aten.addmm.default, torch.ops.aten.linear.default):
                self.shapes.append((str(func.overloadpacket), tuple(args[0].shape)))
            return func(*args, **(kwargs or {}))

    torch.manual_seed(0)
    model = ScratchformerForCausalLM(tiny_config()).eval()
    ids = torch.randint(5, 400, (3, 5))
    with torch.no_grad():
        hidden = model.model(ids).last_hidden_state
        expected = torch.nn.functional.linear(hidden, model.lm_head.weight)
        for logits_to_keep in (1, 0):  # a decoding step's rows, and every position
            recorder = RecordMatmuls()
            with recorder:
                logits = model(ids, logits_to_keep=logits_to_keep).logits
            assert recorder.shapes[-1] == ("aten.mm", (400, 32))  # W @ h^T: the vocabulary matrix first
            torch.testing.assert_close(logits, expected[:, -logits_to_keep:], atol=1e-5, rtol=1e-5)
        # A hook on the output layer (PEFT, offloading, a user's) still runs: the layer is called as a module.
        seen = []
        handle = model.lm_head.register_forward_hook(lambda module, args, out: seen.append(out.shape))
        torch.testing.assert_close(model(ids).logits, expected, atol=1e-5, rtol=1e-5)
        handle.remove()
        assert seen == [(3, 5, 400)]
    # Training keeps nn.Linear: its forward + backward was measured faster in that layout.
    recorder = RecordMatmuls()
    with recorder:
        model(ids).logits.sum().backward()
    assert ("aten.mm", (400, 32)) not in recorder.shapes


def test_one_row_under_compile_takes_a_fused_reduction_that_equals_the_output_layer():
    """A compiled batch-1 decoding step computes the output layer as products and a sum (no matmul in the graph, so
    inductor fuses it); more rows keep the matmul. Both equal nn.Linear."""
    from scratchformer.cpu_kernels import output_layer_logits

    torch.manual_seed(0)
    layer = torch.nn.Linear(32, 400, bias=False)
    graphs = []

    def record_graph(graph_module, example_inputs):
        graphs.append({getattr(node.target, "__name__", node.target) for node in graph_module.graph.nodes
                       if node.op in ("call_function", "call_method")})
        return graph_module.forward

    compiled = torch.compile(lambda h: output_layer_logits(layer, h), backend=record_graph, fullgraph=True)
    with torch.no_grad():
        for shape in ((1, 1, 32), (3, 1, 32)):
            torch._dynamo.reset()
            hidden = torch.randn(shape)
            torch.testing.assert_close(compiled(hidden), layer(hidden), atol=1e-5, rtol=1e-5)
        one_row, three_rows = graphs
    assert {"mul", "sum"} <= one_row and not {"mm", "linear"} & one_row, one_row
    assert "mm" in three_rows, three_rows


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


def count_mlp_rows(model) -> list[int]:
    """Record how many token rows each feed-forward layer computes on: a padded batch's all, or its real ones."""
    rows = []
    for module in model.modules():
        if isinstance(module, ScratchformerMLP):
            module.register_forward_hook(lambda _, args, __: rows.append(args[0].shape[:-1].numel()))
    return rows


def labels_for(head, input_ids, attention_mask):
    """Training targets of each head for a padded batch (None for the bare model)."""
    if head is ScratchformerForSequenceClassification:
        return torch.tensor([0, 1, 0])
    if head is ScratchformerForCausalLM:
        # A left-padded row's first real token has no context: the padding before it would "predict" it.
        no_context = torch.cat([torch.ones_like(attention_mask[:, :1]), attention_mask[:, :-1]], dim=1) == 0
        return input_ids.masked_fill((attention_mask == 0) | no_context, -100)
    if head is ScratchformerForMaskedLM:
        return input_ids.masked_fill(torch.rand(input_ids.shape) > 0.3, -100).masked_fill(attention_mask == 0, -100)
    return None


@pytest.mark.parametrize("left_padding", [True, False], ids=["left-and-right-padding", "right-padding"])
@pytest.mark.parametrize("head", HEADS)
@pytest.mark.parametrize("variant", VARIANTS, ids=lambda v: "-".join(map(str, v.values())))
def test_unpadding_computes_only_the_real_tokens_with_the_same_results(head, variant, left_padding):
    torch.manual_seed(0)
    model = head(tiny_config(**variant)).train()  # no dropout in tiny_config: the two runs are comparable
    input_ids, attention_mask = batch_with_padding(left_padding=left_padding)
    labels = labels_for(head, input_ids, attention_mask)
    rows = count_mlp_rows(model)
    results = {}
    for unpad in (False, True):
        model.config.unpad_inputs = unpad
        model.zero_grad()
        rows.clear()
        out = model(input_ids, attention_mask=attention_mask, labels=labels)
        output = first_output(out)
        loss = out.loss if labels is not None else output[attention_mask.bool()].pow(2).mean()
        loss.backward()
        grads = {name: p.grad.clone() for name, p in model.named_parameters() if p.grad is not None}
        results[unpad] = output, loss, grads, list(rows)
    (padded_out, padded_loss, padded_grads, padded_rows), (out, loss, grads, rows) = results[False], results[True]
    assert padded_rows == [attention_mask.numel()] * len(padded_rows)
    assert rows == [int(attention_mask.sum())] * len(padded_rows)  # only the real tokens went through the MLPs
    real = attention_mask.bool() if out.dim() == 3 else slice(None)
    torch.testing.assert_close(out[real], padded_out[real], atol=1e-5, rtol=1e-4)
    if out.dim() == 3:
        assert (out[~attention_mask.bool()] == 0).all()  # skipped padding: zero vectors / logits
    torch.testing.assert_close(loss, padded_loss, atol=1e-5, rtol=1e-4)
    assert grads.keys() == padded_grads.keys()
    for name in grads:
        torch.testing.assert_close(grads[name], padded_grads[name], atol=1e-5, rtol=1e-4, msg=name)


def test_asking_for_hidden_states_keeps_the_batch_padded():
    model = ScratchformerModel(tiny_config()).eval()
    input_ids, attention_mask = batch_with_padding()
    rows = count_mlp_rows(model)
    out = model(input_ids, attention_mask=attention_mask, output_hidden_states=True)
    assert rows == [attention_mask.numel()] * 2
    assert [h.shape for h in out.hidden_states] == [(3, 9, 32)] * 3
    rows.clear()
    model(input_ids, attention_mask=attention_mask)
    assert rows == [int(attention_mask.sum())] * 2


def test_queries_keys_and_values_have_a_projection_each_and_are_saved_under_their_names(tmp_path):
    """q_proj, k_proj, v_proj as in Llama: FSDP and tensor parallelism shard each on its own (a stacked matrix,
    converted when loading, was sharded wrongly), and the saved file is the module's state dict as it is."""
    from safetensors.torch import load_file

    model = ScratchformerForCausalLM(tiny_config()).eval()
    attention = model.model.layers[0].attention
    assert [attention.q_proj.weight.shape, attention.k_proj.weight.shape] == [(32, 32), (32, 32)]
    model.save_pretrained(tmp_path)
    stored = load_file(tmp_path / "model.safetensors")
    prefix = "model.layers.0.attention."
    assert {prefix + f"{p}_proj.{kind}" for p in "qkvo" for kind in ("weight", "bias")} <= set(stored)
    torch.testing.assert_close(stored[prefix + "k_proj.weight"], attention.k_proj.weight)
    ids = torch.randint(5, 400, (2, 7))
    expected = model(ids).logits
    torch.testing.assert_close(ScratchformerForCausalLM.from_pretrained(tmp_path)(ids).logits, expected)
    # The Trainer resumes with load_state_dict on the saved file.
    fresh = ScratchformerForCausalLM(tiny_config()).eval()
    fresh.load_state_dict(stored, strict=False)
    torch.testing.assert_close(fresh(ids).logits, expected)

def test_bigram_embeddings_make_each_token_see_its_predecessor():
    model = ScratchformerModel(tiny_config(position_embedding_type="rotary", bigram_buckets=101)).eval()
    a, b = torch.tensor([[7, 8, 9, 10]]), torch.tensor([[11, 8, 9, 10]])
    embeddings = model.embeddings
    with torch.no_grad():
        ea, eb = embeddings(a), embeddings(b)
    assert not torch.allclose(ea[0, 1], eb[0, 1])  # token 8 after 7 is not token 8 after 11
    torch.testing.assert_close(ea[0, 2:], eb[0, 2:])  # (8, 9) and (9, 10): the same pairs, the same vectors
    buckets = bigram_ids(a, 101)
    assert buckets.tolist()[0][1] == (7 * 1_000_003 + 8) % 101 and ((buckets >= 0) & (buckets < 101)).all()


def test_a_causal_model_with_bigrams_refuses_a_cached_step():
    model = ScratchformerForCausalLM(tiny_config(bigram_buckets=101)).eval()
    prefix = model(torch.tensor([[7, 8, 9]]), use_cache=True)
    with pytest.raises(ValueError, match="bigram_buckets"):
        model(torch.tensor([[10]]), cache=cache_of(prefix), use_cache=True)


def test_head_and_tail_keeps_the_first_and_last_tokens_row_by_row():
    ids = torch.arange(10, 22).repeat(3, 1)  # 12 tokens a row
    mask = torch.ones_like(ids)
    mask[1, 9:] = 0  # right padding: 9 real tokens
    mask[2, 10:] = 0  # right padding: 10 real tokens
    cut_ids, cut_mask = keep_head_and_tail(ids, mask, max_length=8, head=3, pad_token_id=0)
    assert cut_ids.tolist()[0] == [10, 11, 12, 17, 18, 19, 20, 21]
    assert cut_ids.tolist()[1] == [10, 11, 12, 14, 15, 16, 17, 18] and cut_mask.all()
    left = torch.tensor([[0, 0, 5, 6, 7, 8, 9, 10, 11, 12], [1, 2, 3, 4, 5, 6, 7, 8, 9, 10]])
    left_mask = (left != 0).long()
    cut_ids, cut_mask = keep_head_and_tail(left, left_mask, max_length=6, head=2, pad_token_id=0)
    assert cut_ids.tolist() == [[5, 6, 9, 10, 11, 12], [1, 2, 7, 8, 9, 10]] and cut_mask.all()
    short = torch.ones(2, 5, dtype=torch.long)
    assert keep_head_and_tail(short, None, 8, 3, 0)[0] is short


def test_a_classifier_with_head_tokens_reads_long_inputs_as_head_plus_tail(tmp_path, tokenizer):
    from transformers import pipeline

    config = tiny_config(vocab_size=len(tokenizer), num_labels=2, classifier_head_tokens=16, pad_token_id=tokenizer.pad_token_id)
    model = ScratchformerForSequenceClassification(config).eval()
    text = " ".join(["a great film"] * 30 + ["i hated every minute"] * 20)  # far over 64 tokens
    ids = tokenizer(text)["input_ids"]
    with torch.no_grad():
        expected = model(torch.tensor([head_and_tail(ids, 64, 16)])).logits.softmax(-1)
        torch.testing.assert_close(model(torch.tensor([ids])).logits.softmax(-1), expected)
    model.save_pretrained(tmp_path)
    tokenizer.model_max_length = 10**30  # as the recipe saves it: the model cuts, not the tokenizer
    tokenizer.save_pretrained(tmp_path)
    tokenizer.model_max_length = 64
    scores = pipeline("text-classification", model=str(tmp_path))(text, truncation=True, top_k=None)
    by_label = {s["label"]: s["score"] for s in scores}
    assert abs(by_label[model.config.id2label[1]] - float(expected[0, 1])) < 1e-5


def test_inference_logits_from_32_rows_take_onednn_and_equal_the_output_layers():
    """Eager CPU logits of 32 rows or more go through oneDNN's matmul where torch has it (cpu_kernels.ONEDNN_LINEAR),
    through MKL's h @ W^T when oneDNN is switched off; both equal nn.Linear. Other dtypes take torch.mm."""
    from torch.utils._python_dispatch import TorchDispatchMode

    from scratchformer import cpu_kernels

    class RecordOps(TorchDispatchMode):
        def __init__(self):
            super().__init__()
            self.ops = []

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            self.ops.append(str(func.overloadpacket))
            return func(*args, **(kwargs or {}))

    torch.manual_seed(0)
    model = ScratchformerForCausalLM(tiny_config()).eval()
    ids = torch.randint(5, 400, (8, 5))  # 40 rows
    with torch.no_grad():
        expected = torch.nn.functional.linear(model.model(ids).last_hidden_state, model.lm_head.weight)
        for onednn in (True, False):
            recorder = RecordOps()
            with torch.backends.mkldnn.flags(enabled=onednn), recorder:
                logits = model(ids).logits
            matmuls = [op for op in recorder.ops if op in ("mkldnn._linear_pointwise", "aten.mm", "aten.addmm")]
            assert matmuls[-1] == ("mkldnn._linear_pointwise" if onednn and cpu_kernels.ONEDNN_LINEAR else "aten.mm")
            torch.testing.assert_close(logits, expected, atol=1e-5, rtol=1e-5)
    rows, weight = torch.randn(40, 32, dtype=torch.bfloat16), torch.randn(400, 32, dtype=torch.bfloat16)
    torch.testing.assert_close(cpu_kernels.cpu_rows_times_weight_t(rows, weight), rows @ weight.t())
