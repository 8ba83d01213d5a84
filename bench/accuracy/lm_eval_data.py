"""The data of the lm-evaluation-harness tasks in bench/accuracy/lm_eval_tasks: IMDb test reviews (never train).

    python -m bench.accuracy.lm_eval_data [--out runs/lm_eval] [--reviews 200] [--data-source ...]

imdb_rolling.jsonl: {"text": review} for rolling log-likelihood. imdb_continuation.jsonl: the first `context_words`
words of a review, and four continuations of `continuation_words` words: its own and three other reviews'.
"""

import argparse
import json
import random
from pathlib import Path

CHOICES = 4


def continuation_task(texts: list[str], seed: int, context_words: int = 24, continuation_words: int = 12) -> list[dict]:
    """Multiple-choice rows: context, four continuations (the review's own at a seeded random place), its index."""
    rng = random.Random(seed)
    split = [(t.split()[:context_words], t.split()[context_words : context_words + continuation_words]) for t in texts]
    split = [(c, n) for c, n in split if len(n) == continuation_words]
    rows = []
    for i, (context, own) in enumerate(split):
        others = rng.sample([n for j, (_, n) in enumerate(split) if j != i], CHOICES - 1)
        label = rng.randrange(CHOICES)
        choices = others[:label] + [own] + others[label:]
        rows.append({"context": " ".join(context), "choices": [" ".join(c) for c in choices], "label": label})
    return rows


def write_tasks(texts: list[str], out: Path, seed: int = 0) -> None:
    out.mkdir(parents=True, exist_ok=True)
    for name, rows in (("imdb_rolling", [{"text": t} for t in texts]), ("imdb_continuation", continuation_task(texts, seed))):
        (out / f"{name}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))


def main(argv=None):
    from training.data import load_imdb

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="runs/lm_eval")
    parser.add_argument("--reviews", type=int, default=200)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--data-source", default=None)
    args = parser.parse_args(argv)
    test = load_imdb(source=args.data_source, seed=args.seed)["test"].shuffle(seed=args.seed)
    write_tasks(list(test.select(range(min(args.reviews, len(test))))["text"]), Path(args.out), args.seed)
    print(f"wrote {args.out}/imdb_rolling.jsonl and imdb_continuation.jsonl")


if __name__ == "__main__":
    main()
