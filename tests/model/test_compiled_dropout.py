"""Dropout in a compiled CPU training graph (cpu_kernels.Dropout): masks from hashed element indices, with dropout's
statistics, seeded by torch's generator; eager keeps torch's own dropout."""

import pytest
import torch
from conftest import tiny_config

from scratchformer import ScratchformerForSequenceClassification
from scratchformer.cpu_kernels import INT31, Dropout, hashed_uniform_int31


def test_hashed_integers_are_distinct_uniform_and_seeded():
    torch.manual_seed(0)
    values = hashed_uniform_int31(torch.Size([1 << 20]), torch.device("cpu")).long()
    assert values.min() >= 0 and values.max() <= INT31
    assert values.unique().numel() == values.numel()  # a bijection of the indices: no two elements alike
    counts = torch.bincount(values >> 27, minlength=16).double()  # 16 equal bins of [0, 2^31)
    expected = values.numel() / 16
    assert ((counts - expected) ** 2 / expected).sum() < 50  # chi-square, 15 degrees of freedom (p ~ 1e-5)
    uniform = values.double() / 2**31
    neighbours = torch.corrcoef(torch.stack([uniform[:-1], uniform[1:]]))[0, 1]
    assert abs(neighbours) < 0.01
    again = hashed_uniform_int31(torch.Size([1 << 20]), torch.device("cpu")).long()
    assert (again != values).float().mean() > 0.99  # the next call draws a new seed
    torch.manual_seed(0)
    assert torch.equal(hashed_uniform_int31(torch.Size([1 << 20]), torch.device("cpu")).long(), values)


def dropout_stats(out: torch.Tensor, x: torch.Tensor, p: float) -> float:
    """The fraction kept; asserts every element is either dropped (0) or kept and scaled by 1 / (1 - p)."""
    kept = out != 0
    torch.testing.assert_close(out[kept], x[kept] / (1 - p))
    return kept.float().mean().item()


@pytest.mark.parametrize("backend", ["eager", "inductor"])
def test_compiled_cpu_dropout_keeps_1_minus_p_seeded_by_torch(backend):
    """Traced (dynamo's 'eager' backend) and compiled by inductor: the hashed mask, one draw per call."""
    dropout = Dropout(0.25).train()
    compiled = torch.compile(dropout, backend=backend, fullgraph=True)
    x = torch.rand(64, 1024) + 0.5  # no zeros of its own
    torch.manual_seed(1)
    first, second = compiled(x), compiled(x)
    assert abs(dropout_stats(first, x, 0.25) - 0.75) < 0.01
    assert abs(dropout_stats(second, x, 0.25) - 0.75) < 0.01
    assert ((first != 0) != (second != 0)).float().mean() > 0.2  # a fresh mask each call
    torch.manual_seed(1)
    assert torch.equal(compiled(x), first)  # torch.manual_seed reproduces it
    if backend == "eager":  # the traced ops draw from torch's generator as eager would: the hashed mask, exactly
        torch.manual_seed(1)
        keep = hashed_uniform_int31(x.shape, x.device) >= round(0.25 * 2**31)
        torch.testing.assert_close(first, x * keep / 0.75)
    assert torch.equal(compiled.eval()(x), x)  # eval: the identity


def test_compiled_dropouts_gradient_is_its_mask_and_eager_keeps_torchs_dropout():
    dropout = Dropout(0.5).train()
    x = torch.rand(32, 256, requires_grad=True)
    out = torch.compile(dropout, backend="eager", fullgraph=True)(x)
    out.sum().backward()
    torch.testing.assert_close(x.grad, (out != 0).float() * 2.0)
    torch.manual_seed(3)
    eager = dropout(x)
    torch.manual_seed(3)
    assert torch.equal(eager, torch.nn.functional.dropout(x, 0.5, training=True))  # eager draws torch's masks


def test_compiled_classifier_trains_with_dropout_in_one_graph():
    """The model's dropouts under a fullgraph inductor compile: the loss is finite, and varies with the masks."""
    torch.manual_seed(0)
    model = ScratchformerForSequenceClassification(tiny_config(num_labels=2, pad_token_id=0, hidden_dropout_prob=0.3))
    compiled = torch.compile(model.train(), fullgraph=True)
    ids = torch.randint(5, 400, (4, 12))
    labels = torch.tensor([0, 1, 0, 1])
    losses = [compiled(input_ids=ids, labels=labels).loss for _ in range(2)]
    assert all(torch.isfinite(loss) for loss in losses) and losses[0] != losses[1]
    losses[0].backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters() if p.requires_grad)
    model.eval()
    with torch.no_grad():
        torch.testing.assert_close(compiled(input_ids=ids).logits, model(input_ids=ids).logits)
