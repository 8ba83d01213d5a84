"""The output layer and its cross-entropy with the gradients computed in the forward, for training on CPU.

The plain way, logits = h @ W^T then cross_entropy(logits, labels), walks the [rows, vocab] logits five times:
written by the matmul, read and rewritten by log_softmax, then again by the backward of the loss and of log_softmax.
At the `cpu-small` LM size that is a 262 MB tensor each time, and the output layer plus its loss were ~85 % of a
training step (bench/LOG.md). Here three matmuls over all rows (the logits, d/dh and d/dW, each as fast as a
square matmul) frame one pass over chunks of rows that takes each chunk's softmax, loss and d loss / d logits while the
chunk is still in cache, and the gradients of h and W are ready when the forward ends. The same logits are still
returned, and a gradient that reaches them (a distillation term, say) is added in the backward.
`python -m bench.micro.linear_cross_entropy` measures it against the plain way (bench/RESULTS.md).

`output_logits_and_loss` is the one place that chooses between this pass and the plain one; the language-model
heads call it where a textbook writes `logits = lm_head(h)` and `loss = loss_function(logits, labels)`.
"""

import torch
from torch.utils.weak import WeakIdKeyDictionary

from .cpu_kernels import (is_plain_cpu_linear, loss_in_own_graph, output_layer_logits, storage_users,
                          tracing_may_break_the_graph)

CHUNK_ELEMENTS = 1 << 22  # logits per softmax chunk (16 MB in fp32; 262 rows of a 16k vocabulary)


# Per output-layer weight, the [rows, vocab] tensors of its last training step, kept for the next one: the logits and
# d loss / d logits (weakly keyed: a deleted model takes them with it). A tensor that size is larger than glibc maps
# from its heap (32 MB), so a new one comes fresh from the OS each step, and writing it page-faults every 4 KB of it
# again: 4-6 ms per 16 MB, ~5 % of a compiled `large` LM step each (bench/LOG.md, "Page faults of the logits"). The
# price is that two such tensors stay allocated between training steps.
_kept_buffers = WeakIdKeyDictionary()


def step_buffer(name: str, hidden: torch.Tensor, weight: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """An uninitialised [rows, vocab] tensor for this step's `name` ("logits" or "gradient") of hidden @ weight^T: the
    one this weight's last training step used, when it has the shape and dtype and nothing else holds its memory any
    more (no outputs, logits or views of them kept by the caller), else a new one, which is kept in its place."""
    shape = (hidden.shape[0], weight.shape[0])
    buffers = _kept_buffers.setdefault(weight, {})
    kept = buffers.get(name)
    if (kept is None or kept.shape != shape or kept.dtype != dtype or kept.device != hidden.device
            or storage_users(kept) != 1):
        kept = hidden.new_empty(shape, dtype=dtype)
        buffers[name] = kept
    return kept.detach()  # an alias: autograd attaches this step's history to it, never to the kept tensor


def kept_buffers(weight: torch.Tensor) -> dict[str, torch.Tensor]:
    """The tensors kept between training steps for this output-layer weight, by name (memory accounting)."""
    return dict(_kept_buffers.get(weight, {}))


class LinearCrossEntropy(torch.autograd.Function):
    """(loss, logits) for hidden [N, d], weight [V, d] and labels [N]; the gradients are computed in the forward."""

    @staticmethod
    def forward(ctx, hidden, weight, labels, ignore_index, num_items_in_batch):
        ctx.set_materialize_grads(False)  # unused logits get no zero-filled gradient
        real = labels != ignore_index
        denominator = real.sum() if num_items_in_batch is None else torch.as_tensor(num_items_in_batch)
        # Per row, 1/denominator for real tokens and 0 for ignored ones: d(mean loss)/d(row's loss).
        row_weight = real.to(torch.float32) / denominator.to(device=hidden.device, dtype=torch.float32)
        targets = labels.masked_fill(~real, 0)
        # Three matmuls over all rows (logits, d/dh, d/dW) run at 1.1-1.3x the rate of the same products over 262-row
        # chunks: 1.06x (`large`) to 1.16x (`cpu-small`) faster LM training steps (bench/LOG.md, "Matmuls over all
        # rows in the training loss"). The price is the second kept tensor, `gradient`.
        logits = torch.mm(hidden, weight.t(), out=step_buffer("logits", hidden, weight, hidden.dtype))
        gradient = step_buffer("gradient", hidden, weight, torch.float32)  # d loss / d logits, in fp32 as the loss
        total = torch.zeros((), dtype=torch.float32, device=hidden.device)
        step = max(1, CHUNK_ELEMENTS // weight.shape[0])
        for start in range(0, hidden.shape[0], step):
            rows = slice(start, start + step)
            chunk = logits[rows].float()  # the loss in fp32, as transformers'
            chunk_targets, chunk_weight = targets[rows, None], row_weight[rows, None]
            # One softmax kernel gives both: the loss -log p(target), and d loss / d logits = softmax - one_hot(target)
            # (times the row weight). 3-4x faster than log_softmax's passes (bench/LOG.md).
            probabilities = torch.softmax(chunk, dim=-1, out=gradient[rows])
            target_probabilities = probabilities.gather(1, chunk_targets)
            row_losses = -target_probabilities.log()
            underflow = target_probabilities < 1e-30  # too small for fp32's log to be exact: those rows the long way
            if underflow.any():
                where = underflow.squeeze(1)
                tiny = chunk[where]
                row_losses[where] = torch.logsumexp(tiny, -1, keepdim=True) - tiny.gather(1, chunk_targets[where])
            total += (row_losses * chunk_weight).sum()
            probabilities.mul_(chunk_weight).scatter_add_(1, chunk_targets, -chunk_weight)
        gradient = gradient.to(hidden.dtype)
        hidden_grad = gradient @ weight
        # A frozen output layer (PEFT's LoRA freezes the tied embeddings) skips a third of the matmuls, as autograd would.
        weight_grad = gradient.t() @ hidden if ctx.needs_input_grad[1] else None
        ctx.save_for_backward(hidden, weight, hidden_grad, weight_grad)
        return total, logits

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, loss_grad, logits_grad):
        hidden, weight, hidden_grad, weight_grad = ctx.saved_tensors
        hidden_grad = hidden_grad * loss_grad if loss_grad is not None else torch.zeros_like(hidden)
        if weight_grad is not None:
            weight_grad = weight_grad * loss_grad if loss_grad is not None else torch.zeros_like(weight)
        if logits_grad is not None:  # the logits were used beyond the loss
            hidden_grad = hidden_grad + logits_grad @ weight
            if weight_grad is not None:
                weight_grad = weight_grad + logits_grad.t() @ hidden
        return hidden_grad, weight_grad, None, None, None


def fused_loss_applies(output_layer: torch.nn.Module, hidden_states: torch.Tensor) -> bool:
    """Whether a training forward may compute the loss with `linear_cross_entropy`: gradients are wanted, the output
    layer is a plain CPU nn.Linear (see cpu_kernels.is_plain_cpu_linear), and no trace needs one graph (fullgraph, export)."""
    if not (torch.is_grad_enabled() and hidden_states.requires_grad and is_plain_cpu_linear(output_layer)):
        return False
    if torch.is_autocast_enabled("cpu"):  # autocast refuses the matmuls' out=; it keeps the plain path
        return False
    # Traced, a graph break lets it run eagerly after the compiled blocks.
    return not torch.compiler.is_compiling() or tracing_may_break_the_graph()


@torch.compiler.disable(reason="the loss in its own graph: chunked output layer and cross-entropy run eagerly")
def linear_cross_entropy(
    hidden_states: torch.Tensor,
    output_layer: torch.nn.Linear,
    labels: torch.Tensor,
    ignore_index: int = -100,
    num_items_in_batch: torch.Tensor | int | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(loss, logits) equal to cross_entropy(output_layer(hidden_states), labels) as transformers computes it: the mean
    over tokens whose label is not `ignore_index`, or their sum over `num_items_in_batch` (gradient accumulation).
    `labels` line up with hidden_states [..., d] (a causal LM shifts them first)."""
    vocab_size = output_layer.weight.shape[0]
    real = labels[labels != ignore_index]
    low, high = torch.aminmax(real) if real.numel() else (0, 0)
    if low < 0 or high >= vocab_size:
        bad = int(low) if low < 0 else int(high)
        raise ValueError(f"labels contains {bad}, outside the vocabulary [0, {vocab_size}) (use {ignore_index} to ignore)")
    loss, logits = LinearCrossEntropy.apply(
        hidden_states.reshape(-1, hidden_states.shape[-1]), output_layer.weight, labels.reshape(-1).to(hidden_states.device),
        ignore_index, num_items_in_batch,
    )
    return loss, logits.view(*hidden_states.shape[:-1], vocab_size)


def output_logits_and_loss(
    model: torch.nn.Module, hidden_states: torch.Tensor, labels: torch.Tensor | None, next_token_labels: bool, **kwargs
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """`model.lm_head(hidden_states)` and, given labels, `model.loss_function` of them: the textbook way, except that a
    CPU training step takes the fused pass above (the same values, 1.4-1.8x faster) and inference the fastest matmul
    layout (cpu_kernels.output_layer_logits). `next_token_labels`: the labels are the inputs themselves, so position
    t is scored on label t + 1 (a causal LM's loss shifts them)."""
    if labels is not None and labels.shape == hidden_states.shape[:-1] and fused_loss_applies(model.lm_head, hidden_states):
        ignore_index = kwargs.get("ignore_index", -100)
        targets = kwargs.get("shift_labels") if next_token_labels else labels  # as transformers' ForCausalLMLoss
        if targets is None:  # tokens < n predict n, the last predicts nothing
            targets = torch.nn.functional.pad(labels, (0, 1), value=ignore_index)[..., 1:]
        loss, logits = linear_cross_entropy(
            hidden_states, model.lm_head, targets, ignore_index, kwargs.get("num_items_in_batch")
        )
        return logits, loss
    logits = output_layer_logits(model.lm_head, hidden_states)
    loss = None
    if labels is not None:
        loss_in_own_graph(logits)
        loss = model.loss_function(logits=logits, labels=labels, vocab_size=model.config.vocab_size, **kwargs)
    return logits, loss
