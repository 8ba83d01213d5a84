"""ELECTRA's replaced-token detection (Clark et al. 2020) as a pre-training objective: `--pretrain electra`.

    text ──mask 15 %──▶ generator (a masked LM half the width) ──samples a token at each mask──▶ corrupted text
                                                                                                      │
                                                                  discriminator: the Transformer kept for the classifier
                                                                                                      │
                                                              per token, a yes/no score: "was this token replaced?"

A masked LM learns from the 15 % of tokens it masks; the discriminator learns from every token, and needs no
vocabulary-sized output layer (at `cpu-best`'s size that layer and its loss are ~70 % of a causal-LM training step
on CPU). The generator is trained as a masked LM at the same time; its samples are plausible, so telling them from
the original is a hard task.
Only the discriminator is kept: `save_transformer` writes it as a plain `ScratchformerModel` folder, which any
scratchformer head loads (`--init-from`, or the classifier right after this phase).
"""

import copy

import torch
import torch.nn.functional as F
from torch import nn

from scratchformer import ScratchformerConfig, ScratchformerForMaskedLM, ScratchformerModel

# The paper's weight of the detection loss against the generator's masked-LM loss (lambda = 50), and its finding
# for the generator: a quarter to half the discriminator's size works best. Half; a quarter was screened too, and the
# discriminator collapsed with either (training/NOTES.md).
DETECTION_LOSS_WEIGHT = 50.0
GENERATOR_WIDTH_FRACTION = 0.5


def generator_config(discriminator: ScratchformerConfig) -> ScratchformerConfig:
    """The generator's architecture: the discriminator's depth at a fraction of its width, predicting masked tokens
    only (sparse_prediction). Its input and output embeddings are its own (untied), so no tensor is shared and a
    checkpoint is one plain state dict."""
    width = max(16, int(discriminator.hidden_size * GENERATOR_WIDTH_FRACTION))
    heads = max(1, width // discriminator.head_dim)
    config = copy.deepcopy(discriminator)
    config.hidden_size, config.num_attention_heads = width, heads  # heads as wide as the discriminator's
    config.intermediate_size = max(16, int(discriminator.intermediate_size * GENERATOR_WIDTH_FRACTION))
    config.sparse_prediction, config.tie_word_embeddings = True, False
    config.validate_scratchformer()
    return config


def sample(logits: torch.Tensor) -> torch.LongTensor:
    """One token per row of [M, V] logits, drawn from their softmax: by inverting the cumulative distribution at one
    uniform number per row. torch.multinomial draws an exponential number per vocabulary entry instead, which took
    40 % of a `cpu-best`-sized step on this CPU."""
    cumulative = torch.softmax(logits.float(), dim=-1).cumsum_(-1)  # [M, V]
    uniform = torch.rand(logits.shape[0], 1, device=logits.device) * cumulative[:, -1:]  # [M, 1]
    return torch.searchsorted(cumulative, uniform).squeeze(-1).clamp_(max=logits.shape[-1] - 1)


def replace_masked_tokens(input_ids: torch.LongTensor, labels: torch.LongTensor, sampled: torch.LongTensor):
    """(corrupted ids, replaced) for a masked batch: the original text with the generator's samples ([M], in order)
    at the masked positions (labels != -100), and 1.0 where that changed the token. A sample equal to the original
    token counts as original, as in the paper."""
    masked = labels != -100  # [B, L]
    original = torch.where(masked, labels, input_ids)  # [B, L]: the collator's [MASK] and random tokens undone
    corrupted = original.masked_scatter(masked, sampled)  # [B, L]
    return corrupted, (corrupted != original).float()


class ReplacedTokenDetection(nn.Module):
    """Generator and discriminator trained together; forward(input_ids, attention_mask, labels) -> {"loss", ...}
    with DataCollatorForLanguageModeling(mlm=True)'s batches (labels: the original token at masked positions, -100
    elsewhere)."""

    def __init__(self, config: ScratchformerConfig):
        super().__init__()
        if config.is_decoder:
            raise ValueError("replaced-token detection trains a bidirectional discriminator: is_decoder must be False")
        self.generator = ScratchformerForMaskedLM(generator_config(config))
        self.discriminator = ScratchformerModel(config)
        # ELECTRA's discriminator head: dense -> activation -> one score per token.
        self.dense = nn.Linear(config.hidden_size, config.hidden_size)
        self.classifier = nn.Linear(config.hidden_size, 1)

    def get_output_embeddings(self) -> nn.Module:
        """The generator's vocabulary layer (optimizers.hidden_matrices keeps it out of Muon, as any output layer)."""
        return self.generator.get_output_embeddings()

    def forward(self, input_ids: torch.LongTensor, attention_mask: torch.Tensor | None = None,
                labels: torch.LongTensor | None = None) -> dict[str, torch.Tensor]:
        if labels is None:
            raise ValueError("ReplacedTokenDetection needs labels: the original tokens at the masked positions")
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        # 1. The generator, a masked LM, predicts each masked token ([M, V] logits: masked positions only).
        generated = self.generator(input_ids=input_ids, attention_mask=attention_mask, labels=labels)
        # 2. A token sampled from its prediction replaces each masked one; sampling passes no gradient back.
        with torch.no_grad():
            sampled = sample(generated.logits)  # [M]
        corrupted, replaced = replace_masked_tokens(input_ids, labels, sampled)  # [B, L] each
        # 3. The discriminator reads the corrupted text and scores every token: replaced or not.
        hidden = self.discriminator(input_ids=corrupted, attention_mask=attention_mask).last_hidden_state  # [B, L, C]
        scores = self.classifier(F.gelu(self.dense(hidden))).squeeze(-1)  # [B, L]
        real = attention_mask.bool()  # padding is neither
        detection_loss = F.binary_cross_entropy_with_logits(scores[real], replaced[real])
        loss = generated.loss + DETECTION_LOSS_WEIGHT * detection_loss
        return {"loss": loss, "generator_loss": generated.loss.detach(), "detection_loss": detection_loss.detach()}

    def save_transformer(self, folder) -> None:
        """The discriminator alone, as a ScratchformerModel folder (config.json + model.safetensors): the generator
        has done its job."""
        self.discriminator.save_pretrained(folder)
