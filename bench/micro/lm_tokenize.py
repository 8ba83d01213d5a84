"""How fast the LM recipe tokenizes a corpus (training.lm.tokenize: datasets.map, batched, the fast tokenizer), and
that a second pass reads the on-disk cache instead of tokenizing again.

    python -m bench.micro.lm_tokenize CORPUS.txt TOKENIZER_DIR [--num-proc 1 2] [--json PATH]

CORPUS.txt is read as the recipe reads a .txt file (a document per line) into a fresh cache folder; TOKENIZER_DIR is
a saved tokenizer (e.g. RUN/work/tokenizer of a training.lm run). Each pass is one bench.harness.timed call. Peak
memory of a whole run is measured on the recipe itself (training/NOTES.md: `/usr/bin/time -v python -m training.lm`).
"""

import argparse
import json
import tempfile
from pathlib import Path

import datasets
from transformers import AutoTokenizer

from bench.harness import timed
from training.lm import tokenize


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.micro.lm_tokenize", description=__doc__.splitlines()[0])
    parser.add_argument("corpus", type=Path)
    parser.add_argument("tokenizer", type=Path)
    parser.add_argument("--num-proc", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    tokenizer = AutoTokenizer.from_pretrained(args.tokenizer)
    megabytes = args.corpus.stat().st_size / 1e6
    results = []
    for num_proc in args.num_proc:
        with tempfile.TemporaryDirectory() as cache:
            corpus = datasets.load_dataset("text", data_files=str(args.corpus), split="train", cache_dir=cache)
            def tokenize_corpus():
                tokenize(tokenizer, corpus, num_proc=num_proc if num_proc > 1 else None)

            first = timed(tokenize_corpus, 1)
            cached = timed(tokenize_corpus, 1)  # the second pass reads the on-disk cache
        results.append({"num_proc": num_proc, "megabytes": round(megabytes, 1), "seconds": round(first, 1),
                        "mb_per_s": round(megabytes / first, 2), "cached_pass_s": round(cached, 2)})
        print(f"num_proc {num_proc}: {megabytes:.1f} MB in {first:.1f} s = {megabytes / first:.2f} MB/s; "
              f"second pass (cache) {cached:.2f} s", flush=True)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
