"""CPU speed machinery beside the textbook: what the model calls to be fast on CPU and under torch.compile, each with
the measurement that justified it (bench/LOG.md). The model file attaches them at a few marked points:

    Dropout               nn.Dropout that draws hashed masks inside a compiled CPU graph (eager: torch's own);
                          attach_compiled_dropout gives it to a model's nn.Dropout modules
    loss_in_own_graph     a compiled language model's loss in a graph of its own (no zero-filled logits gradient)
    output_layer_logits   the output layer's matmul in the layout that is fastest for the rows at hand
    storage_users         how many tensors share a storage (linear_cross_entropy.py's buffer reuse)
"""

import torch
from torch import nn


# torch.compile ------------------------------------------------------------------------------------------------------
#
# A compiled graph's backward gets a gradient for every differentiable tensor it returns, and autograd fills in zeros
# where the loss did not use one (pytorch/pytorch#131794; torch 2.13 has no way round it). A language model's graph
# returns the logits beside the loss, so every training step filled and read a [batch, length, vocab] zero tensor:
# 262 MB and ~0.11 s of a ~1.6 s cpu-small step, the whole gap to GPT-2 when both were compiled (bench/LOG.md).
# With the loss in a graph of its own, the logits are that graph's input and get their real gradient instead.


@torch.compiler.assume_constant_result  # run once while tracing; the trace keeps the answer as a constant
def _graph_breaks_are_errors() -> bool:
    """Whether the code being traced must stay one graph: torch.compile(fullgraph=True) or error_on_graph_break."""
    try:
        from torch._dynamo.symbolic_convert import InstructionTranslator

        tracer = InstructionTranslator.current_tx()
        return bool(tracer.one_graph or tracer.error_on_graph_break)
    except Exception:  # a torch whose tracer looks different: assume it must (never break)
        return True


def tracing_may_break_the_graph() -> bool:
    """Whether code is being traced by a torch.compile that allows graph breaks (not torch.export, not fullgraph)."""
    return torch.compiler.is_compiling() and not torch.compiler.is_exporting() and not _graph_breaks_are_errors()


def loss_in_own_graph(logits: torch.Tensor) -> None:
    """Under torch.compile, when the logits will be trained through, end the graph here: the loss that follows runs
    in a graph of its own. Eager, torch.export and fullgraph compiles are left as one graph."""
    if logits.requires_grad and tracing_may_break_the_graph():
        torch._dynamo.graph_break("the loss in its own graph: the logits then get their real gradient, not zeros")


# Dropout in a compiled CPU graph -----------------------------------------------------------------------------------
#
# Inductor draws dropout's random numbers with one Philox call per element, a scalar loop: on CPU that costs ~6 ms
# per [2048, 256] dropout, as much as the add and LayerNorm around it four times over, and 12 % of a compiled `large`
# classifier step (bench/LOG.md, "Dropout in a compiled CPU graph"). Hashing each element's index with a per-call
# seed instead is a few integer operations that inductor vectorises into the kernel around it (~1.5 ms). Eager and
# GPU graphs keep torch's own dropout, so eager training draws the masks it always has.

INT31 = 0x7FFFFFFF


def hashed_uniform_int31(shape: torch.Size, device: torch.device) -> torch.Tensor:
    """Pseudo-random integers in [0, 2^31) of `shape`: each element's index plus a seed drawn from torch's generator
    (so torch.manual_seed and saved RNG states govern it), mixed by a bijective integer hash (two xorshift-multiply
    rounds). int32 products wrap; the mask keeps 31 bits, so shifts never see a sign bit."""
    seed = torch.randint(0, INT31, (), dtype=torch.int32, device=device)
    x = (torch.arange(shape.numel(), dtype=torch.int32, device=device) + seed) & INT31
    for _ in range(2):
        x = ((x >> 16) ^ x) * 0x45D9F3B & INT31
    return ((x >> 16) ^ x).view(shape)


class Dropout(nn.Dropout):
    """nn.Dropout, except in a CPU graph torch.compile traces for training: there its mask comes from hashed element
    indices (hashed_uniform_int31), which inductor fuses, instead of inductor's per-element Philox draws."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not (self.training and 0 < self.p < 1 and torch.compiler.is_compiling() and x.device.type == "cpu"
                and x.numel() <= INT31 and not self.inplace):
            return super().forward(x)
        keep = hashed_uniform_int31(x.shape, x.device) >= round(self.p * 2**31)
        return x * keep * (1.0 / (1.0 - self.p))


def attach_compiled_dropout(model: nn.Module) -> None:
    """Each plain nn.Dropout of `model` becomes a Dropout (same state, same eager behaviour), as Liger patches a
    model's modules from outside: the model's own code says nn.Dropout."""
    for module in model.modules():
        if type(module) is nn.Dropout:
            module.__class__ = Dropout


# CPU matmul layout ----------------------------------------------------------------------------------------------------
#
# The output layer maps hidden states h [rows, d] to the vocabulary through W [V, d]. nn.Linear computes h @ W^T; on
# CPU, BLAS computes the same products as (W @ h^T)^T 1.5-4x faster for 4-64 rows, as in a batched decoding step,
# and 1.1x faster for 256-1024 rows (`python -m bench.micro.output_layer_cpu`, bench/LOG.md "The output layer's matmul
# layout"). oneDNN's matmul beats both from 32 rows, so eager CPU work takes it there (cpu_rows_times_weight_t, below).
# One row under torch.compile (a batch-1 decoding step) is a product and a sum instead, which inductor
# fuses. A training forward with labels takes linear_cross_entropy.py's fused pass instead.


def is_plain_cpu_linear(module: torch.nn.Module) -> bool:
    """Whether a module is a bias-free nn.Linear on CPU that nothing hooks into (PEFT, accelerate's offloading,
    DeepSpeed, FSDP or a user's hook): only then may its weight be used without calling the module."""
    return (
        type(module) is torch.nn.Linear
        and module.bias is None
        and module.weight.device.type == "cpu"
        and not module._forward_hooks
        and not module._forward_pre_hooks
        and not torch.nn.modules.module._global_forward_hooks
        and not torch.nn.modules.module._global_forward_pre_hooks
        and not hasattr(module, "_hf_hook")
        and "forward" not in module.__dict__  # a forward replaced on the module (transformers' tensor parallelism)
    )


# Whether this torch build has oneDNN's linear op (builds without oneDNN, such as some ARM ones, take torch.mm).
ONEDNN_LINEAR = torch.backends.mkldnn.is_available() and hasattr(torch.ops.mkldnn, "_linear_pointwise")


def cpu_rows_times_weight_t(rows: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """rows [n, d] @ weight[V, d]^T as a new tensor, for eager CPU work outside autograd; fp32 through oneDNN."""
    # MKL's sgemm runs this "B transposed" product at 65-70 % of its square-matmul rate here; oneDNN's matmul, reached
    # through the op inductor's own CPU linears use, runs it 1.3-1.6x faster (bench/LOG.md "oneDNN for the output
    # layer"). It has no out= and no autograd formula, hence a new tensor and no gradients.
    if (ONEDNN_LINEAR and torch.backends.mkldnn.enabled and rows.dtype == weight.dtype == torch.float32
            and rows.device.type == weight.device.type == "cpu"):
        return torch.ops.mkldnn._linear_pointwise(rows.contiguous(), weight.contiguous(), None, "none", [None], "")
    return torch.mm(rows, weight.t())


def output_layer_logits(output_layer: torch.nn.Module, hidden_states: torch.Tensor) -> torch.Tensor:
    """The output layer applied to hidden_states [..., d]; without gradients on CPU: eager from 32 rows through oneDNN,
    otherwise as (W @ h^T)^T, or for one row under torch.compile as a fused reduction. An output layer that is not a
    plain bias-free nn.Linear, or has hooks (PEFT, offloading, a user's hook), is called as a module."""
    if torch.is_grad_enabled() or not is_plain_cpu_linear(output_layer):
        return output_layer(hidden_states)
    # Rows are counted before reshaping, which copies a sliced (logits_to_keep) input. An export keeps its batch
    # symbolic: no branch on it.
    row_count = None if torch.compiler.is_exporting() else hidden_states.shape[:-1].numel()
    if row_count == 1 and torch.compiler.is_compiling():
        # A compiled batch-1 decoding step: products and a sum, which inductor fuses into one vectorised, threaded
        # pass over W, 2-2.6x faster than BLAS's one-row matmul. (Eager, this would build a [V, d] tensor.)
        return (hidden_states.unsqueeze(-2) * output_layer.weight).sum(-1)
    weight, logits_shape = output_layer.weight, (*hidden_states.shape[:-1], output_layer.weight.shape[0])
    if row_count is not None and row_count >= 32 and not torch.compiler.is_compiling():
        # Eager, from 32 rows (a beam search's step, a prompt): oneDNN, as fast as the weight-first layout at 32-64 rows
        # of hidden 128, 1.3-1.8x faster beyond (`python -m bench.micro.output_layer_cpu`).
        return cpu_rows_times_weight_t(hidden_states.reshape(-1, weight.shape[1]), weight).reshape(logits_shape)
    if row_count is not None and not 2 <= row_count <= 1024:  # one row eager gains nothing, 4,096 or more lose
        return output_layer(hidden_states)
    rows = hidden_states.reshape(-1, hidden_states.shape[-1])
    return torch.mm(weight, rows.t()).t().reshape(logits_shape)


# Memory -------------------------------------------------------------------------------------------------------------


def storage_users(tensor: torch.Tensor) -> int | None:
    """How many tensors share `tensor`'s memory (itself included), or None where this torch cannot tell (the count
    is torch's private `_storage_Use_Count`)."""
    use_count = getattr(torch._C, "_storage_Use_Count", None)
    if use_count is None:
        return None
    storage = tensor.untyped_storage()  # this Python handle is one more user while it lives
    return use_count(storage._cdata) - 1
