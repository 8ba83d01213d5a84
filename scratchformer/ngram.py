"""The n-gram path of the classifier and its head-and-tail cut: NBSVM (Wang & Manning 2012) inside the model.

    hashed n-grams   each token n-gram (and, with ngram_word_order, each word n-gram read off the tokens) hashed into
                     one of `ngram_buckets` rows, as fastText does
    NgramLogits      a linear bag-of-n-grams classifier: each distinct n-gram of the whole input adds its weight
                     times its naive-Bayes log-count ratio to the label scores (ratios fitted from counts)
    head and tail    inputs longer than the positions keep their first and last tokens (where reviews sum up)

The Transformer (modeling_scratchformer.py) adds these scores to its own logits; hashed token pairs are also what
`bigram_buckets` embeds.
"""

import torch
from torch import nn

from .configuration_scratchformer import ScratchformerConfig


NGRAM_HASH_MULTIPLIER = 1_000_003  # a prime: spreads n-grams of tokens over the buckets (wraps past 3-grams: still a hash)


def shift_right(x: torch.Tensor, steps: int, fill) -> torch.Tensor:
    """x moved `steps` positions to the right along the sequence: position i holds x[i - steps], `fill` before."""
    steps = min(steps, x.shape[1])
    return nn.functional.pad(x[:, : x.shape[1] - steps], (steps, 0), value=fill)


def hashed_ngrams(input_ids: torch.Tensor, n: int, buckets: int) -> torch.Tensor:
    """The bucket of the n-gram ending at each token: a hash, as fastText does (tokens before the first are -1)."""
    hashed = torch.zeros_like(input_ids)
    for back in range(n - 1, -1, -1):  # oldest token first: h = ((t[i-2] * M) + t[i-1]) * M + t[i]
        hashed = hashed * NGRAM_HASH_MULTIPLIER + shift_right(input_ids, back, -1)
    return hashed % buckets


def bigram_ids(input_ids: torch.Tensor, buckets: int) -> torch.Tensor:
    """The bucket of each (previous token, token) pair (the first token pairs with -1)."""
    return hashed_ngrams(input_ids, 2, buckets)


def head_and_tail(ids: list[int], max_length: int, head: int) -> list[int]:
    """A token list cut to max_length: its first `head` tokens and its last `max_length - head`."""
    return ids if len(ids) <= max_length else ids[:head] + ids[len(ids) - (max_length - head):]


def keep_head_and_tail(input_ids: torch.Tensor, attention_mask: torch.Tensor | None, max_length: int, head: int,
                       pad_token_id: int | None):
    """A (padded) batch whose rows are longer than max_length, cut row by row as head_and_tail cuts a list; the real
    tokens keep their order and side of the padding. Tensor ops only (one gather), so torch.compile and export trace
    it too. Batches that fit come back unchanged."""
    if input_ids.shape[1] <= max_length:
        return input_ids, attention_mask
    real = torch.ones_like(input_ids, dtype=torch.bool) if attention_mask is None else attention_mask.bool()
    lengths = real.sum(1, keepdim=True)
    first = (real.cumsum(1) == 0).sum(1, keepdim=True)  # where each row's real tokens start
    kept = lengths.clamp(max=max_length)
    left_padded = real[:, 0].logical_not().any() & real[:, -1].all()
    slot = torch.arange(max_length, device=input_ids.device).unsqueeze(0)
    k = slot - left_padded * (max_length - kept)  # slot holds the row's k-th kept token (right-aligned if left-padded)
    valid = (k >= 0) & (k < kept)
    skipped = (lengths - max_length).clamp(min=0)  # the middle tokens a long row loses
    index = first + torch.where(k < head, k, k + skipped)
    cut_ids = input_ids.gather(1, index.clamp(0, input_ids.shape[1] - 1)).masked_fill(~valid, pad_token_id or 0)
    cut_mask = valid.to(attention_mask.dtype if attention_mask is not None else torch.long)
    return cut_ids, cut_mask


WORD_HASH_PRIME = 2_147_483_647  # 2**31 - 1: word hashes stay below it, so a product of two fits in int64
WORD_HASH_BASE = 257  # a polynomial hash over a word's UTF-8 bytes
MAX_WORD_PIECES = 12  # tokens joined into one word (a rare longer word is hashed by its last 12)
NOT_WORD, WORD, MARKS = 0, 1, 2  # kinds of token piece: no word characters; letters/digits/apostrophes; ! and ?


def word_piece(text: str) -> tuple[int, bool, bytes]:
    """What one token's text adds to words: its kind, whether it starts a new word (leading whitespace), and its
    lowercased word characters (a token mixing letters and punctuation keeps only its ! and ?: rare, as byte-level
    BPE keeps letters and punctuation in separate tokens)."""
    core = text.strip().lower()
    starts = text[:1].isspace()
    if core and any(c.isalnum() or c == "\ufffd" for c in core) and all(c.isalnum() or c in "'\ufffd" for c in core):
        return WORD, starts, core.encode()  # \ufffd: a piece of a multi-byte letter, decoded alone
    marks = "".join(c for c in core if c in "!?")
    return (MARKS, starts, marks.encode()) if marks else (NOT_WORD, True, b"")


def word_piece_table(tokenizer, vocab_size: int) -> torch.Tensor:
    """(vocab_size, 4) int64: each token id's piece kind, starts-a-word flag, and the polynomial hash and base
    power of its word characters (so the hash of a word is the hash of its pieces chained)."""
    table = torch.zeros(vocab_size, 4, dtype=torch.long)
    table[:, 3] = 1
    special = set(tokenizer.all_special_ids)
    for token_id in range(min(vocab_size, len(tokenizer))):
        if token_id in special:
            continue
        kind, starts, core = word_piece(tokenizer.convert_tokens_to_string([tokenizer.convert_ids_to_tokens(token_id)]))
        hashed, power = 0, 1
        for byte in core:
            hashed, power = (hashed * WORD_HASH_BASE + byte) % WORD_HASH_PRIME, power * WORD_HASH_BASE % WORD_HASH_PRIME
        table[token_id] = torch.tensor([kind, starts, hashed, power])
    return table


def word_ends(input_ids: torch.Tensor, real: torch.Tensor, pieces: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The words of a batch of token ids: (hash of the word ending at each token, whether a word ends there)."""
    # Clamped: an id outside the vocabulary gets the Transformer's clear error, not an index error here.
    kind, starts, hashed, power = pieces[input_ids.clamp(0, pieces.shape[0] - 1)].unbind(-1)
    kind = kind.masked_fill(~real, NOT_WORD)
    # A token continues the word before it when it has no leading space and is of the same (word) kind.
    continues = (kind != NOT_WORD) & (starts == 0) & (kind == shift_right(kind, 1, NOT_WORD))
    word, scale, linked = hashed, power, torch.ones_like(real)
    for back in range(1, MAX_WORD_PIECES):  # word = ((h[i-2] * p[i-1] + h[i-1]) * p[i] + h[i]) mod prime
        linked = linked & shift_right(continues, back - 1, False)
        word = (word + linked * shift_right(hashed, back, 0) * scale) % WORD_HASH_PRIME
        scale = scale * shift_right(power, back, 1) % WORD_HASH_PRIME
    ends = (kind != NOT_WORD) & ~nn.functional.pad(continues[:, 1:], (0, 1), value=False)
    return word, ends


def hashed_word_ngrams(word: torch.Tensor, ends: torch.Tensor, n: int, buckets: int) -> torch.Tensor:
    """The bucket of the word n-gram ending at each word end, hashed as hashed_ngrams hashes token n-grams (-1
    elsewhere, and where fewer than n words end before it)."""
    positions = torch.arange(word.shape[1], device=word.device).expand_as(word)
    previous_end = shift_right(torch.where(ends, positions, -1), 1, -1).cummax(1).values  # the last word end before i
    words, at, whole = [word], positions, ends
    for _ in range(n - 1):
        at = previous_end.gather(1, at.clamp(min=0)).masked_fill(at < 0, -1)
        whole = whole & (at >= 0)
        words.append(word.gather(1, at.clamp(min=0)))
    hashed = torch.zeros_like(word)
    for value in reversed(words):  # oldest word first, as in hashed_ngrams
        hashed = hashed * NGRAM_HASH_MULTIPLIER + value
    return (hashed % buckets).masked_fill(~whole, -1)


class NgramLogits(nn.Module):
    """A linear bag-of-n-grams classifier (NBSVM-style): each distinct hashed n-gram adds its weight times its
    naive-Bayes log-count ratio to the label scores; the ratios are fitted from counts, the weights by training."""

    def __init__(self, config: ScratchformerConfig):
        super().__init__()
        self.order, self.word_order, self.buckets = config.ngram_order, config.ngram_word_order, config.ngram_buckets
        self.weight = nn.Parameter(torch.zeros(config.ngram_buckets, config.num_labels))
        self.register_buffer("log_count_ratio", torch.zeros(config.ngram_buckets, config.num_labels))
        if self.word_order:  # filled from the tokenizer by set_word_pieces, saved with the weights
            self.register_buffer("word_pieces", torch.zeros(config.vocab_size, 4, dtype=torch.long))

    def set_word_pieces(self, tokenizer) -> None:
        """Read which tokens start, continue or are no part of words, from the tokenizer the model reads."""
        self.word_pieces.copy_(word_piece_table(tokenizer, self.word_pieces.shape[0]))

    def distinct_ngrams(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None) -> torch.Tensor:
        """(batch, n-grams) buckets of each row's n-grams of real tokens (and words), each bucket once; -1 fills
        the rest."""
        real = torch.ones_like(input_ids, dtype=torch.bool) if attention_mask is None else attention_mask.bool()
        buckets, whole = [], real
        for n in range(1, self.order + 1):
            if n > 1:  # an n-gram counts when all its n tokens are real: the same for left and right padding
                whole = whole & shift_right(real, n - 1, False)
            buckets.append(hashed_ngrams(input_ids, n, self.buckets).masked_fill(~whole, -1))
        if self.word_order:
            word, ends = word_ends(input_ids, real, self.word_pieces)
            buckets += [hashed_word_ngrams(word, ends, n, self.buckets) for n in range(1, self.word_order + 1)]
        ordered = torch.cat(buckets, 1).sort(1).values
        repeated = ordered == shift_right(ordered, 1, -2)  # -2: never a bucket, nor the -1 filler
        return ordered.masked_fill(repeated, -1)  # binarized, as NBSVM's features: presence, not counts

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None) -> torch.Tensor:
        ngrams = self.distinct_ngrams(input_ids, attention_mask)
        present = ngrams.ge(0).unsqueeze(-1).to(self.weight.dtype)
        rows = ngrams.clamp(min=0)
        return ((self.weight[rows] * self.log_count_ratio[rows]) * present).sum(1)

    @torch.no_grad()
    def fit_log_count_ratios(
        self, input_ids: list[list[int]], labels: list[int], smoothing: float = 1.0, kind: str = "one_vs_rest"
    ) -> None:
        """Set each n-gram's log-count ratio per label from training texts (add-`smoothing` counts, one text counting
        once). "one_vs_rest": log of its share of the label's n-grams over its share of the other labels' n-grams;
        "multinomial": log of its share of the label's n-grams, centred over the labels. Both are NBSVM's ratio
        and its negation for two labels (the second at half scale)."""
        counts = torch.zeros(self.buckets, self.weight.shape[1], dtype=torch.float64)
        by_length = sorted(range(len(input_ids)), key=lambda i: len(input_ids[i]))
        for first in range(0, len(by_length), 32):  # batches of similar lengths, right-padded and masked
            batch = by_length[first : first + 32]
            longest = max(1, max(len(input_ids[i]) for i in batch))
            ids = torch.zeros(len(batch), longest, dtype=torch.long)
            mask = torch.zeros(len(batch), longest, dtype=torch.long)
            for row, i in enumerate(batch):
                ids[row, : len(input_ids[i])] = torch.tensor(input_ids[i], dtype=torch.long)
                mask[row, : len(input_ids[i])] = 1
            ngrams = self.distinct_ngrams(ids, mask)
            rows = torch.tensor([labels[i] for i in batch]).unsqueeze(1).expand_as(ngrams)
            present = ngrams >= 0
            counts.index_put_((ngrams[present], rows[present]), torch.ones(int(present.sum()), dtype=torch.float64),
                              accumulate=True)
        inside = counts + smoothing
        if kind == "one_vs_rest":
            outside = counts.sum(1, keepdim=True) - counts + smoothing
            ratio = (inside / inside.sum(0)).log() - (outside / outside.sum(0)).log()
        elif kind == "multinomial":
            share = (inside / inside.sum(0)).log()
            ratio = share - share.mean(1, keepdim=True)
        else:
            raise ValueError(f"fit_log_count_ratios: kind={kind!r}, expected 'one_vs_rest' or 'multinomial'")
        self.log_count_ratio.copy_(ratio.to(self.log_count_ratio.dtype))


def fit_ngram_path(model, input_ids: list[list[int]], labels: list[int], smoothing: float = 1.0, tokenizer=None,
                   kind: str = "one_vs_rest") -> None:
    """ScratchformerForSequenceClassification.fit_ngram_log_count_ratios: check what it is given, then fit."""
    if model.ngram_logits is None:
        raise ValueError("fit_ngram_log_count_ratios: this model has no n-gram path (config.ngram_buckets is 0)")
    if model.num_labels < 2 or model.config.problem_type in ("regression", "multi_label_classification"):
        raise ValueError("fit_ngram_log_count_ratios: naive-Bayes ratios need single-label classification with 2 or "
                         f"more labels (num_labels={model.num_labels}, problem_type={model.config.problem_type!r})")
    if len(input_ids) != len(labels) or not all(0 <= label < model.num_labels for label in labels):
        raise ValueError(f"fit_ngram_log_count_ratios: needs one class id in [0, {model.num_labels}) per example")
    if model.config.ngram_word_order:
        if tokenizer is None:
            raise ValueError("fit_ngram_log_count_ratios: config.ngram_word_order adds word n-grams; pass the "
                             "tokenizer=... that made input_ids, so the model can tell which tokens form words")
        model.ngram_logits.set_word_pieces(tokenizer)
    model.ngram_logits.fit_log_count_ratios(input_ids, labels, smoothing, kind)
