"""IMDb language model: tokenizer -> causal LM on the train reviews -> test perplexity -> greedy and beam samples.

    python -m training.lm [--preset cpu-small|cpu-best|gpu] [--output-dir runs/imdb-lm] [--resume]

Writes a Hub-ready folder: weights + code, tokenizer, generation config, metrics.json (perplexity),
samples.json, training_curve.png, attention.png and the model card (README.md).
"""

import math
from itertools import chain

import torch
from transformers import DataCollatorForLanguageModeling, set_seed

from scratchformer import ScratchformerForCausalLM

from . import common

PRESETS = {
    "tiny": common.Preset(vocab_size=400, hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                          intermediate_size=64, max_length=32, epochs=1, batch_size=8, save_steps=4,
                          eval_batch_size=32, learning_rate=3e-3),
    # Rotary positions (RoPE): relative offsets generalise across the block, where GPT-2 learns one vector per slot.
    "cpu-small": common.Preset(vocab_size=8000, epochs=1, max_test_docs=2000, position_embedding_type="rotary"),
    "cpu-best": common.Preset(vocab_size=8000, hidden_size=256, num_hidden_layers=4, intermediate_size=1024,
                              epochs=1, max_test_docs=2000, learning_rate=6e-4, position_embedding_type="rotary"),
    "gpu": common.Preset(vocab_size=16000, hidden_size=512, num_hidden_layers=6, num_attention_heads=8,
                         intermediate_size=2048, max_length=512, epochs=3, batch_size=64, eval_batch_size=128,
                         learning_rate=3e-4, save_steps=500, bf16=True, position_embedding_type="rotary"),
}
PROMPT_TOKENS = 12
NEW_TOKENS = 40


def blocks(tokenizer, texts: list[str], block_size: int) -> dict[str, list[list[int]]]:
    """Concatenate the reviews (each ended by </s>) and cut the stream into equal blocks, as GPT-2 was trained."""
    stream = list(chain.from_iterable(ids + [tokenizer.eos_token_id] for ids in tokenizer(texts)["input_ids"]))
    usable = len(stream) - len(stream) % block_size
    return {"input_ids": [stream[i : i + block_size] for i in range(0, usable, block_size)]}


def prepare_data(args, preset: common.Preset, work):
    """IMDb (test capped at preset.max_test_docs reviews), its tokenizer, and both packed into equal blocks."""
    data = common.load_data(args)
    if preset.max_test_docs is not None and len(data["test"]) > preset.max_test_docs:
        data["test"] = data["test"].shuffle(seed=args.seed).select(range(preset.max_test_docs))
    tokenizer = common.tokenizer_for(data["train"]["text"], work, preset)
    packed = data.map(
        lambda batch: blocks(tokenizer, batch["text"], preset.max_length),
        batched=True,
        remove_columns=["text", "label"],
    )
    return data, tokenizer, packed


def samples(model, tokenizer, texts: list[str]) -> list[dict]:
    """Greedy and 4-beam continuations of the first tokens of a few test reviews."""
    model.eval()
    results = []
    for text in texts:
        prompt = tokenizer(text, return_tensors="pt")["input_ids"][:, :PROMPT_TOKENS].to(model.device)
        row = {"prompt": tokenizer.decode(prompt[0])}
        new_tokens = min(NEW_TOKENS, model.config.max_position_embeddings - prompt.shape[1])
        for name, settings in {"greedy": {}, "beam4": {"num_beams": 4, "no_repeat_ngram_size": 3}}.items():
            with torch.no_grad():
                out = model.generate(prompt, max_new_tokens=new_tokens, do_sample=False, **settings)
            row[name] = tokenizer.decode(out[0, prompt.shape[1]:], skip_special_tokens=True)
        results.append(row)
    return results


def main(argv=None):
    args = common.parse_args(__doc__.splitlines()[0], PRESETS, "runs/imdb-lm", argv)
    preset = args.preset_values
    output = common.prepare_output_dir(args)
    if args.resume and common.run_is_complete(output):
        return 0
    work = output / common.WORK
    stopwatch = common.Stopwatch(output)

    common.enter_phase(output, "data")
    data, tokenizer, packed = prepare_data(args, preset, work)

    set_seed(args.seed)  # weight initialisation happens before Trainer seeds anything
    common.enter_phase(output, "train")
    trainer = common.RecipeTrainer(
        model=ScratchformerForCausalLM(common.model_config(tokenizer, preset, is_decoder=True)),
        args=common.training_arguments(work / "train", preset, args.seed, preset.epochs, eval_strategy="epoch"),
        train_dataset=packed["train"],
        eval_dataset=packed["validation"],
        data_collator=DataCollatorForLanguageModeling(tokenizer, mlm=False),
        processing_class=tokenizer,
    )
    common.run_phase(trainer, work / "train", args.resume, stopwatch)

    common.enter_phase(output, "evaluate")
    test_loss = trainer.evaluate(packed["test"], metric_key_prefix="test")["test_loss"]
    if trainer.is_world_process_zero():
        metrics = {
            "perplexity": math.exp(test_loss),
            "test_loss": test_loss,
            "test_tokens": len(packed["test"]) * preset.max_length,
            **common.base_metrics(args, trainer.model, stopwatch.total(), data),
        }
        common.finish(output, trainer, tokenizer, metrics, "eval_loss", "IMDb causal language model",
                      data["test"][0]["text"],
                      extra_json={"samples.json": samples(trainer.model, tokenizer, data["test"][:3]["text"])})
        print(f"test perplexity {metrics['perplexity']:.2f} on {metrics['test_tokens']} tokens, "
              f"wall time {metrics['wall_time_s']:.0f} s  -> {output}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
