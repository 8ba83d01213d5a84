"""Quickstart: train a tokenizer, build a model, train it briefly, generate, save, reload with AutoModel.

Run: python examples/quickstart.py [--steps 200] [--output-dir runs/quickstart]
"""

import argparse

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from scratchformer import ScratchformerConfig, ScratchformerForCausalLM, train_tokenizer

TEXTS = [
    "the cat sat on the mat.", "the dog sat on the log.", "a cat and a dog sat together.",
    "the mat was red and the log was brown.", "every cat likes a warm mat.", "every dog likes a long walk.",
] * 20


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--output-dir", default="runs/quickstart")
    args = parser.parse_args()
    torch.manual_seed(0)

    tokenizer = train_tokenizer(TEXTS, vocab_size=300, min_frequency=1, model_max_length=64, add_eos_token=True)
    config = ScratchformerConfig(vocab_size=len(tokenizer), hidden_size=64, num_hidden_layers=2,
                                 num_attention_heads=4, intermediate_size=256, max_position_embeddings=64)
    model = ScratchformerForCausalLM(config)

    batch = tokenizer(TEXTS[:6], padding=True, return_tensors="pt")
    labels = batch["input_ids"].masked_fill(batch["attention_mask"] == 0, -100)
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    for step in range(args.steps):
        loss = model(**batch, labels=labels).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        if step % 50 == 0 or step == args.steps - 1:
            print(f"step {step:4d}  loss {loss.item():.3f}")

    model.eval()
    prompt = tokenizer("the cat", return_tensors="pt", add_special_tokens=False)
    generated = model.generate(**prompt, max_new_tokens=8, num_beams=3, do_sample=False)
    text = tokenizer.decode(generated[0], skip_special_tokens=True)
    print("generated:", text)

    model.save_pretrained(args.output_dir)
    tokenizer.save_pretrained(args.output_dir)
    reloaded = AutoModelForCausalLM.from_pretrained(args.output_dir)
    again = AutoTokenizer.from_pretrained(args.output_dir).decode(
        reloaded.generate(**prompt, max_new_tokens=8, num_beams=3, do_sample=False)[0], skip_special_tokens=True
    )
    assert again == text, (again, text)
    print(f"saved to {args.output_dir} and reloaded with AutoModelForCausalLM: same generation")


if __name__ == "__main__":
    main()
