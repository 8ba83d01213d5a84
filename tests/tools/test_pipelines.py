"""pipeline(): text-classification, text-generation and fill-mask on saved tiny models with their own tokenizer."""

import pytest
import torch
from conftest import sentiment_corpus, tiny_config, train_briefly
from transformers import pipeline

from scratchformer import ScratchformerForCausalLM, ScratchformerForMaskedLM, ScratchformerForSequenceClassification


@pytest.fixture(scope="module")
def classifier_dir(tokenizer, tmp_path_factory):
    path = tmp_path_factory.mktemp("classifier")
    texts, labels = sentiment_corpus(64)
    config = tiny_config(vocab_size=len(tokenizer), id2label={0: "NEGATIVE", 1: "POSITIVE"})
    train_briefly(ScratchformerForSequenceClassification(config), tokenizer, texts, labels, steps=60).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


def test_text_classification_returns_labels_from_id2label(classifier_dir):
    classify = pipeline("text-classification", model=str(classifier_dir))
    results = classify(["overall a great film.", "so a terrible film.", "honestly i loved every minute."])
    assert [r["label"] for r in results] == ["POSITIVE", "NEGATIVE", "POSITIVE"]
    assert all(0.5 < r["score"] <= 1 for r in results)
    # Longer than max_position_embeddings: the tokenizer's model_max_length lets the pipeline truncate.
    assert classify("great " * 500, truncation=True)[0]["label"] in {"NEGATIVE", "POSITIVE"}


def test_text_generation_continues_the_prompt(tokenizer, tmp_path):
    texts, _ = sentiment_corpus(64)
    model = train_briefly(ScratchformerForCausalLM(tiny_config(vocab_size=len(tokenizer))), tokenizer, texts, steps=60)
    model.save_pretrained(tmp_path)
    tokenizer.save_pretrained(tmp_path)
    generate = pipeline("text-generation", model=str(tmp_path))
    out = generate("overall a", max_new_tokens=4, do_sample=False)[0]["generated_text"]
    ids = tokenizer("overall a", return_tensors="pt")["input_ids"]
    expected = tokenizer.decode(model.generate(ids, max_new_tokens=4, do_sample=False)[0])
    assert out == expected and out.startswith("overall a") and len(out) > len("overall a")
    batch = generate(["so a", "well i hated"], max_new_tokens=3, do_sample=False, batch_size=2)
    assert [b[0]["generated_text"].split()[:2] for b in batch] == [["so", "a"], ["well", "i"]]


def test_fill_mask_predicts_the_masked_word(tokenizer, tmp_path):
    texts, _ = sentiment_corpus(64)
    model = ScratchformerForMaskedLM(tiny_config(vocab_size=len(tokenizer)))
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    batch = tokenizer(texts, padding=True, return_tensors="pt")
    generator = torch.Generator().manual_seed(0)
    for _ in range(150):  # BERT-style: hide 30 % of the real tokens, predict them
        hide = (torch.rand(batch["input_ids"].shape, generator=generator) < 0.3) & batch["attention_mask"].bool()
        labels = batch["input_ids"].masked_fill(~hide, -100)
        loss = model(input_ids=batch["input_ids"].masked_fill(hide, tokenizer.mask_token_id),
                     attention_mask=batch["attention_mask"], labels=labels).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    model.eval().save_pretrained(tmp_path)
    tokenizer.save_pretrained(tmp_path)
    fill = pipeline("fill-mask", model=str(tmp_path))
    predictions = fill("so i loved every <mask>.", top_k=3)
    assert len(predictions) == 3
    assert predictions[0]["token_str"].strip() == "minute", predictions
