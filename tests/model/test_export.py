"""Export: torch.export / dynamo trace the forward in one graph; `python -m scratchformer.export` writes ONNX that
onnxruntime runs with PyTorch's logits on a padded batch, and a greedy decode through the exported KV-cache graphs
equals generate()."""

import subprocess
import sys

import pytest
import torch
from conftest import REPO_ROOT, tiny_config

from scratchformer import (
    ScratchformerForCausalLM,
    ScratchformerForMaskedLM,
    ScratchformerForSequenceClassification,
    ScratchformerModel,
)

onnxruntime = pytest.importorskip("onnxruntime")
pytest.importorskip("onnxscript")


def padded_batch():
    ids = torch.randint(5, 400, (3, 11))
    mask = torch.ones_like(ids)
    mask[1, 7:] = 0  # right padding
    mask[2, :5] = 0  # left padding
    return ids, mask


@pytest.mark.parametrize("head", [ScratchformerForSequenceClassification, ScratchformerForCausalLM])
def test_the_forward_traces_in_one_graph(head):
    model = head(tiny_config(num_labels=2, pad_token_id=0)).eval()
    ids, mask = padded_batch()
    inputs = dict(input_ids=ids, attention_mask=mask, **({"use_cache": False} if head is ScratchformerForCausalLM else {}))
    explained = torch._dynamo.explain(model)(**inputs)
    assert explained.graph_break_count == 0, explained.break_reasons
    exported = torch.export.export(model, (), inputs)  # (the cache path: the ONNX decode graphs below)
    got, expected = exported.module()(**inputs).logits, model(**inputs).logits
    if head is ScratchformerForCausalLM:  # eager unpads (0 at the padding), a trace cannot: compare real tokens
        got, expected = got[mask.bool()], expected[mask.bool()]
    torch.testing.assert_close(got, expected)


def export_folder(model, tmp_path):
    folder, out = tmp_path / "model", tmp_path / "onnx"
    model.save_pretrained(folder)
    result = subprocess.run([sys.executable, "-m", "scratchformer.export", str(folder), str(out)], cwd=REPO_ROOT,
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    return out


def test_the_classifier_runs_in_onnxruntime_with_pytorchs_logits(tmp_path):
    torch.manual_seed(0)
    model = ScratchformerForSequenceClassification(tiny_config(num_labels=2, pad_token_id=0)).eval()
    out = export_folder(model, tmp_path)
    ids, mask = padded_batch()
    session = onnxruntime.InferenceSession(str(out / "model.onnx"), providers=["CPUExecutionProvider"])
    (logits,) = session.run(None, {"input_ids": ids.numpy(), "attention_mask": mask.numpy()})
    with torch.no_grad():
        expected = model(input_ids=ids, attention_mask=mask).logits
    torch.testing.assert_close(torch.from_numpy(logits), expected, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("positions", ["learned", "rotary"])
def test_greedy_decoding_through_the_onnx_kv_cache_graphs_equals_generate(tmp_path, positions):
    from scratchformer.export import OnnxGreedyDecoder

    torch.manual_seed(0)
    model = ScratchformerForCausalLM(tiny_config(pad_token_id=0, eos_token_id=None, position_embedding_type=positions)).eval()
    out = export_folder(model, tmp_path)
    ids, mask = padded_batch()
    ids, mask = ids[[0, 2]], mask[[0, 2]]  # generate() takes left padding
    prefill = onnxruntime.InferenceSession(str(out / "prefill.onnx"), providers=["CPUExecutionProvider"])
    positions_ = (mask.cumsum(-1) - 1).clamp(min=0)
    logits, *_ = prefill.run(None, {"input_ids": ids.numpy(), "attention_mask": mask.numpy(), "position_ids": positions_.numpy()})
    with torch.no_grad():
        expected = model(input_ids=ids, attention_mask=mask, position_ids=positions_).logits[:, -1:]
    torch.testing.assert_close(torch.from_numpy(logits), expected, atol=1e-4, rtol=1e-4)
    decoded = OnnxGreedyDecoder(out)(ids.numpy(), mask.numpy(), max_new_tokens=8)
    generated = model.generate(ids, attention_mask=mask, max_new_tokens=8, do_sample=False, pad_token_id=0)
    assert decoded.tolist() == generated.tolist()


@pytest.mark.parametrize("head, settings", [
    (ScratchformerForSequenceClassification, {}),
    (ScratchformerForSequenceClassification, {"classifier_pooling": "cls"}),  # the last block computes one token
    (ScratchformerForCausalLM, {}), (ScratchformerForMaskedLM, {}), (ScratchformerModel, {}),
], ids=["classifier-mean", "classifier-cls", "causal-lm", "masked-lm", "model"])
def test_compiled_training_forward_is_one_graph_equal_to_eager_without_recompiles(head, settings):
    """torch.compile(fullgraph=True, dynamic=True) (dynamo only: the 'eager' backend keeps the test fast) on padded
    batches of three lengths: no graph break, no recompile, the eager results on every real token."""
    torch.manual_seed(0)
    model = head(tiny_config(num_labels=2, pad_token_id=0, hidden_dropout_prob=0.0, **settings)).train()
    compiled = torch.compile(model, backend="eager", fullgraph=True, dynamic=True)
    torch._dynamo.reset()
    with torch._dynamo.config.patch(error_on_recompile=True):
        for length in (9, 13, 17):
            ids = torch.randint(5, 400, (3, length))
            mask = torch.ones_like(ids)
            mask[1, length - 3:] = 0
            labels = torch.tensor([0, 1, 0]) if head is ScratchformerForSequenceClassification else ids.masked_fill(mask == 0, -100)
            kwargs = {} if head is ScratchformerModel else {"labels": labels}
            # Eager first: transformers' classification loss sets config.problem_type on its first call, a
            # once-only change a trace would otherwise see as a reason to recompile.
            expected = model(input_ids=ids, attention_mask=mask, **kwargs)
            got = compiled(input_ids=ids, attention_mask=mask, **kwargs)
            if head is not ScratchformerModel:
                torch.testing.assert_close(got.loss, expected.loss)
            first = got.logits if hasattr(got, "logits") else got.last_hidden_state
            reference = expected.logits if hasattr(expected, "logits") else expected.last_hidden_state
            if first.dim() == 3:  # per token: eager leaves padding at 0 (unpadded), a trace computes it
                first, reference = first[mask.bool()], reference[mask.bool()]
            torch.testing.assert_close(first, reference)


@pytest.mark.parametrize("padding_side", ["right", "left"])
def test_compiled_classifier_cuts_long_inputs_to_head_and_tail_as_eager_does(padding_side):
    """Inputs longer than the positions: the compiled classifier (fullgraph, dynamic) cuts them to head + tail inside
    the graph, as eager does (it used to skip the cut while tracing), with the n-gram path (token and word n-grams)
    reading the whole input."""
    torch.manual_seed(0)
    config = tiny_config(num_labels=2, pad_token_id=0, max_position_embeddings=16, classifier_head_tokens=4,
                         ngram_buckets=97, ngram_word_order=2)
    model = ScratchformerForSequenceClassification(config).eval()
    torch.nn.init.normal_(model.ngram_logits.weight)
    pieces = model.ngram_logits.word_pieces  # a made-up word table: tokens of every kind, starting words or not
    pieces.copy_(torch.stack([torch.randint(0, 3, (400,)), torch.randint(0, 2, (400,)), torch.randint(0, 10**6, (400,)),
                              torch.randint(1, 10**6, (400,))], 1))
    model.ngram_logits.fit_log_count_ratios([[5, 6, 7, 8], [9, 10, 11, 5]], [0, 1])
    compiled = torch.compile(model, backend="eager", fullgraph=True, dynamic=True)
    torch._dynamo.reset()
    with torch._dynamo.config.patch(error_on_recompile=True), torch.no_grad():
        for length in (20, 27, 33):
            ids = torch.randint(5, 400, (3, length))
            mask = torch.ones_like(ids)
            short = slice(0, 12) if padding_side == "left" else slice(length - 12, length)  # 12 tokens padded away
            mask[1, short], mask[2, :1 if padding_side == "left" else length - 1:] = 0, 0
            ids = ids.masked_fill(mask == 0, 0)
            torch.testing.assert_close(compiled(input_ids=ids, attention_mask=mask).logits,
                                       model(input_ids=ids, attention_mask=mask).logits)


@pytest.mark.parametrize("batch", [2, 1], ids=["batch2", "batch1"])
@pytest.mark.parametrize("settings", [{"do_sample": False}, {"do_sample": True, "top_p": 0.9}], ids=["greedy", "top_p"])
def test_compiled_decoding_with_a_static_cache_equals_eager(settings, batch):
    """generate(cache_implementation="static") with transformers' compiled decoding step (compile_config; on CPU it
    must be asked for; transformers compiles greedy and sampling steps, not beam search): fullgraph, so a graph break
    in a decoding step fails; same tokens and scores as eager. Batch 1 takes the fused one-row output layer."""
    from transformers import CompileConfig

    torch.manual_seed(0)
    model = ScratchformerForCausalLM(tiny_config(is_decoder=True, position_embedding_type="rotary", pad_token_id=0,
                                                 max_position_embeddings=32)).eval()
    ids = torch.randint(5, 400, (batch, 6))
    common = dict(max_new_tokens=8, cache_implementation="static", return_dict_in_generate=True, output_scores=True,
                  pad_token_id=0, **settings)
    torch.manual_seed(1)
    eager = model.generate(ids, disable_compile=True, **common)
    config = CompileConfig(backend="eager", fullgraph=True, mode=None)
    config._compile_all_devices = True  # transformers compiles decoding on GPUs only unless told
    torch._dynamo.reset()
    torch.manual_seed(1)
    compiled = model.generate(ids, compile_config=config, **common)
    assert hasattr(model, "_compiled_call")  # the decoding steps went through torch.compile
    assert torch.equal(compiled.sequences, eager.sequences)
    torch.testing.assert_close(torch.stack(compiled.scores), torch.stack(eager.scores))


@pytest.mark.parametrize("head", [ScratchformerForCausalLM, ScratchformerForMaskedLM])
def test_compiled_training_runs_the_loss_in_its_own_graph_with_eagers_gradients(head):
    """Default torch.compile (graph breaks allowed): the loss gets a graph of its own, so the logits take their real
    gradient instead of a zero-filled one (cpu_kernels.loss_in_own_graph). Gradients through the loss and through the
    returned logits equal eager; without gradients (evaluation) the forward stays one graph."""
    torch.manual_seed(0)
    model = head(tiny_config(pad_token_id=0, hidden_dropout_prob=0.0)).train()
    ids, mask = padded_batch()
    ids, mask = ids[:2], mask[:2]  # right padding: with left padding, eager's 0 logits at the padding meet a label
    labels = ids.masked_fill(mask == 0, -100)
    torch._dynamo.reset()
    explained = torch._dynamo.explain(model)(input_ids=ids, attention_mask=mask, labels=labels)
    assert explained.graph_count == 2, explained.break_reasons
    assert "the loss in its own graph" in str(explained.break_reasons[0].reason)
    with torch.no_grad():
        assert torch._dynamo.explain(model)(input_ids=ids, attention_mask=mask, labels=labels).graph_count == 1

    def gradients(forward):
        model.zero_grad()
        out = forward(input_ids=ids, attention_mask=mask, labels=labels)
        (out.loss + out.logits[mask.bool()].square().mean()).backward()  # an extra term on the logits (distillation)
        return out.loss.detach(), {name: p.grad.clone() for name, p in model.named_parameters()}

    expected_loss, expected = gradients(model)
    torch._dynamo.reset()
    got_loss, got = gradients(torch.compile(model, backend="aot_eager", dynamic=True))
    torch.testing.assert_close(got_loss, expected_loss)
    torch.testing.assert_close(got, expected)
