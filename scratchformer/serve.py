"""`transformers serve` for a scratchformer folder: an OpenAI-compatible server (/v1/completions, ...) on it.

    python -m scratchformer.serve MODEL [--host 127.0.0.1] [--port 8000] [other `transformers serve` options]

`--continuous-batching` serves concurrent requests together (transformers' paged attention). On CPU, size its cache
as well, e.g. `--cb-num-blocks 64 --cb-max-batch-tokens 256`: by default transformers sizes it for a GPU's memory,
and its start-up warmup then takes tens of seconds.

transformers' server loads a model with `getattr(transformers, config.architectures[0])`, which has no class for a
model type outside the library, remote code or not (ModelManager._load_model, 5.23 to 5.25). This launcher gives
that name to the matching Auto class, whose auto_map then loads our code (trust_remote_code), and starts the
server unchanged.
"""

import sys

import transformers
from transformers import AutoConfig

AUTO_CLASSES = {  # the architecture names a folder's config.json records, and the Auto class that loads each
    "ScratchformerForCausalLM": "AutoModelForCausalLM",
    "ScratchformerForConditionalGeneration": "AutoModelForSeq2SeqLM",
}
# At import, not in main(): from 5.25 the server loads the model in a spawned process, which imports this module
# again (as __mp_main__) but does not run main().
for _architecture, _auto_class in AUTO_CLASSES.items():
    setattr(transformers, _architecture, getattr(transformers, _auto_class))


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0].startswith("-"):
        raise SystemExit(__doc__)
    model = argv[0]
    architectures = AutoConfig.from_pretrained(model, trust_remote_code=True).architectures or []
    servable = [a for a in architectures if a in AUTO_CLASSES]
    if not servable:
        raise SystemExit(f"{model} is not a generating scratchformer model (architectures: {architectures})")
    from transformers.cli.transformers import app

    sys.argv = ["transformers", "serve", model, "--trust-remote-code", *argv[1:]]
    app()


if __name__ == "__main__":
    main()
