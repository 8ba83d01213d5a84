"""A causal LM whose output layer is an adaptive softmax (Grave et al. 2017), for pre-training a classifier's
Transformer cheaply: `--set pretrain_softmax=adaptive` with `--pretrain lm`.

    tokens ──▶ Transformer (causal) ──▶ h [B, L, C] ──▶ head: the frequent tokens + one entry per rarer cluster
                                                         │   (a full C-wide softmax over V/8 + 2 outputs)
                                                         └─▶ only for a target in a cluster: h projected to C/4
                                                             (or C/16) ──▶ a softmax over that cluster's tokens

At `cpu-best`'s size (C = 128, V = 16,000) the full vocabulary layer and its loss are ~70 % of a causal-LM training
step on CPU: every position scores all 16,000 tokens three times (forward, and two products backward). Token
frequencies fall steeply with rank (Zipf's law), so the head scores the frequent tokens at full width and the rare
ones go through narrower, rarely-used clusters: a step took 0.57x the full softmax's there (training/NOTES.md). The
likelihood stays exact (the head's cluster probability times the in-cluster one); the Transformer below it is the
same model.
Only the Transformer is kept: `save_transformer` writes a plain `ScratchformerModel` folder (causal), which the
classifier loads as it loads a causal LM's body.
"""

import numpy as np
import torch
from torch import nn

from scratchformer import ScratchformerConfig, ScratchformerModel

# The cluster boundaries as fractions of the vocabulary ranked by frequency (16,000: the 2,000 most frequent, the
# next 4,000, the other 10,000), and how much narrower each cluster is than the one before (the paper's 4).
CLUSTER_FRACTIONS = (0.125, 0.375)
DIV_VALUE = 4.0


def frequency_ranks(token_counts: np.ndarray) -> torch.LongTensor:
    """Each token id's rank by frequency (0: the most frequent; ties by id), the order the adaptive softmax's clusters
    expect: BPE ids follow merge order, not frequency."""
    order = np.lexsort((np.arange(len(token_counts)), -np.asarray(token_counts)))  # ids, most frequent first
    ranks = np.empty(len(token_counts), dtype=np.int64)
    ranks[order] = np.arange(len(token_counts))
    return torch.from_numpy(ranks)


def cutoffs_for(vocab_size: int, hidden_size: int) -> list[int]:
    """Increasing cluster boundaries strictly inside (0, vocab_size), as nn.AdaptiveLogSoftmaxWithLoss requires, and
    no more clusters than leave each at least one dimension (cluster i is hidden_size // DIV_VALUE ** (i + 1) wide)."""
    cutoffs = sorted({min(max(1, round(vocab_size * fraction)), vocab_size - 1) for fraction in CLUSTER_FRACTIONS})
    cutoffs = [c for c in cutoffs if 0 < c < vocab_size]
    return [c for i, c in enumerate(cutoffs) if hidden_size // DIV_VALUE ** (i + 1) >= 1]


class AdaptiveSoftmaxLM(nn.Module):
    """forward(input_ids, attention_mask, labels) -> {"loss"}: the next-token loss, with DataCollatorForLanguageModeling
    (mlm=False)'s batches (labels: the input ids, -100 at padding), the labels shifted by one inside."""

    def __init__(self, config: ScratchformerConfig, token_counts: np.ndarray):
        super().__init__()
        if not config.is_decoder:
            raise ValueError("a causal LM reads left to right: is_decoder must be True")
        if len(token_counts) != config.vocab_size:
            raise ValueError(f"{len(token_counts)} token counts for a vocabulary of {config.vocab_size}")
        self.transformer = ScratchformerModel(config)
        self.register_buffer("rank", frequency_ranks(token_counts))  # [V]: token id -> its index in the softmax
        self.output = nn.AdaptiveLogSoftmaxWithLoss(config.hidden_size, config.vocab_size,
                                                    cutoffs_for(config.vocab_size, config.hidden_size), div_value=DIV_VALUE)

    def get_output_embeddings(self) -> nn.Module:
        """The output layer (optimizers.hidden_matrices keeps all its matrices out of Muon, as any output layer)."""
        return self.output

    def forward(self, input_ids: torch.LongTensor, attention_mask: torch.Tensor | None = None,
                labels: torch.LongTensor | None = None) -> dict[str, torch.Tensor]:
        if labels is None:
            raise ValueError("AdaptiveSoftmaxLM needs labels: the input ids, -100 where nothing is predicted")
        hidden = self.transformer(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state  # [B, L, C]
        targets = labels[:, 1:]  # [B, L-1]: position t predicts token t+1
        scored = targets != -100
        result = self.output(hidden[:, :-1][scored], self.rank[targets[scored]])  # [N, C], [N]
        return {"loss": result.loss}

    def save_transformer(self, folder) -> None:
        """The Transformer alone, as a ScratchformerModel folder (config.json + model.safetensors)."""
        self.transformer.save_pretrained(folder)
