"""Text classification: tokenizer -> optional pre-training (masked or causal LM) -> fine-tuning -> test evaluation,
with linear baselines on the same split.

    python -m training.classify [--preset cpu-small|cpu-best|gpu] [--output-dir runs/imdb-classify] [--resume]
    python -m training.classify --pretrain lm [--unlabeled-file more.txt]     # pre-train on the train texts first
    python -m training.classify --train-file train.csv [--test-file test.csv] [--text-column text]
                                [--label-column label] --output-dir runs/my-classifier

Without data flags it trains on IMDb's movie reviews (labels NEGATIVE/POSITIVE); with them, on any labelled texts
(training/sources.py: files, folders of label-named sub-folders, `datasets` datasets), the labels' names taken from
the data. Writes a Hub-ready folder: weights + code, tokenizer, config with the labels, metrics.json (with the
NBSVM-bi and TF-IDF + LR baselines on the same split), training_curve.png, attention.png and the model card.
"""

import copy
import json
from dataclasses import replace
from pathlib import Path

import numpy as np
from transformers.tokenization_utils_base import VERY_LARGE_INTEGER
import datasets
from transformers import DataCollatorForLanguageModeling, DataCollatorWithPadding, set_seed

from scratchformer import ScratchformerForCausalLM, ScratchformerForMaskedLM, ScratchformerForSequenceClassification
from scratchformer.ngram import head_and_tail

from . import adaptive_softmax, cli, common, distributed, electra, lm, optimizers, publishing, resume, sources
from .baselines import linear_baselines
from .data import ID2LABEL
from .metrics import classification_metrics

# Whole reviews matter: 86 % of them fit 512 tokens, and 512 beat 256 by 1.5 points (training/NOTES.md); batches of
# similar lengths (group_by_length) keep the cost near that of 256 with random batches.
# The n-gram path (NBSVM's features inside the model) is what lifts validation: 90.0 % -> 91.8 % with 1M buckets;
# 4M buckets beat 1M by 0.9 points, 8M beat 4M by 0.07 and word 1-2-grams added 0.3, on held-out train folds, and
# 8M beat 4M on the validation of 3 seeds (93.49 against 93.25 %) for about 10 % more time (training/NOTES.md).
CPU_SMALL = cli.Preset(max_length=512, head_tokens=128, ngram_buckets=8_388_608, ngram_word_order=2)
PRESETS = {
    "tiny": cli.Preset(vocab_size=400, hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                          intermediate_size=64, max_length=64, head_tokens=16, epochs=2, batch_size=8,
                          save_steps=4, eval_batch_size=32, pretrain_epochs=1, ngram_buckets=4096, ngram_word_order=2),
    "cpu-small": CPU_SMALL,
    # The Transformer pre-trained first as a causal LM on the train reviews (4.3 epochs), then reading its last token:
    # 92.16 ± 0.13 % over 3 seeds in 51-59 min a seed, against 91.73 ± 0.10 % without pre-training (mean-pooled, 32
    # min of it added nothing). The LM trains through an adaptive softmax: 0.57x the full softmax's step, whose 3 seeds
    # scored 92.12 ± 0.19 % in 62 min a seed. Word 1-3-grams lost 0.46 points to 1-2-grams on held-out train folds
    # (training/NOTES.md). --pretrain none: cpu-small.
    "cpu-best": replace(CPU_SMALL, pretrain="lm", pretrain_epochs=4.3, pretrain_softmax="adaptive"),
    # cpu-best's recipe scaled where 2 cores cannot go (not run yet: no GPU lent so far): a 6 x 512 body (48x cpu-best's
    # weights outside the embeddings) and 16 epochs of causal LM, since the Transformer alone gained with LM epochs and
    # flattened at cpu-best's 2 x 128. Expected: 2-4 minutes of one H100, under 10 end to end (training/NOTES.md).
    "gpu": replace(CPU_SMALL, hidden_size=512, num_hidden_layers=6, num_attention_heads=8, intermediate_size=2048,
                   pretrain="lm", pretrain_epochs=16, eval_batch_size=256, save_steps=500, bf16=True),
}
# A user's data trains for at least MIN_STEPS and at most MAX_STEPS optimizer steps (IMDb's cpu-small: 1,484; 600
# steps cost 1.3 points of validation accuracy on Rotten Tomatoes against 1,868, training/NOTES.md).
MIN_STEPS, MAX_STEPS = 1500, 3000
# --pretrain lm: a causal LM on the train texts (and --unlabeled-file) as training.lm trains one (rotary positions,
# blocks of max_length tokens), for 0.75 epoch unless --set pretrain_epochs=... says otherwise; the classifier then
# reads with causal attention. --pretrain mlm: a masked LM on each text's head and tail; --pretrain electra: ELECTRA's
# replaced-token detection on the same inputs (training/electra.py). All pre-train as training.lm does (Muon 2e-2 on
# the hidden matrices, no dropout), so they compare at equal cost; the fine-tuning keeps the preset's optimizer and
# dropout (training/NOTES.md: the causal LM won).
PRETRAINING = dict(optimizer="muon", learning_rate=2e-2, dropout=0.0)
DEFAULT_PRETRAIN_EPOCHS = {"mlm": 1.0, "lm": 0.75, "electra": 1.0}
PRETRAIN_SOFTMAXES = ("full", "adaptive")  # the causal LM's output layer (cli.Preset.pretrain_softmax)


def encode(tokenizer, texts: list[str], max_length: int, head_tokens: int, whole: bool = False) -> list[list[int]]:
    """Token ids of each review; long ones keep their beginning and their end, where reviewers sum up (the rule the
    saved model applies itself to long inputs: config.classifier_head_tokens). `whole`: uncut, for a model with an
    n-gram path, which reads the whole review (the model then cuts the Transformer's input itself)."""
    ids = tokenizer(texts)["input_ids"]
    return ids if whole else [head_and_tail(row, max_length, head_tokens) for row in ids]


def model_config_settings(preset: cli.Preset, labels: list[str]) -> dict:
    """What a classifier adds to the shared architecture: pooling, the data's labels, the cut, the n-gram path."""
    return dict(classifier_pooling=preset.classifier_pooling, id2label=dict(enumerate(labels)),
                label2id={name: i for i, name in enumerate(labels)}, classifier_head_tokens=preset.head_tokens,
                ngram_buckets=preset.ngram_buckets, ngram_order=preset.ngram_order,
                ngram_word_order=preset.ngram_word_order)


def model_config(tokenizer, preset: cli.Preset, labels: list[str], **settings):
    """The classifier's architecture for a preset: the shared one plus pooling and the data's labels (a causal stack
    after causal-LM pre-training)."""
    causal = {"is_decoder": True} if preset.pretrain_epochs > 0 and preset.pretrain == "lm" else {}
    return common.model_config(tokenizer, preset, **model_config_settings(preset, labels), **causal, **settings)


def with_pretraining(args, preset: cli.Preset) -> cli.Preset:
    """The preset with its pre-training settled: --pretrain (none, mlm or lm) over the preset's own, for the preset's
    pretrain_epochs or DEFAULT_PRETRAIN_EPOCHS; after a causal LM (as training.lm trains one) the classifier reads
    with rotary positions and pools its last token, unless --set says otherwise. Under --distributed a preset's
    adaptive softmax gives way to the full one, the output layer DistributedConfig can shard."""
    if args.pretrain == "none":
        return replace(preset, pretrain_epochs=0.0)
    if args.pretrain is not None:
        preset = replace(preset, pretrain=args.pretrain,
                         pretrain_epochs=preset.pretrain_epochs or DEFAULT_PRETRAIN_EPOCHS[args.pretrain])
    if preset.pretrain != "lm" or preset.pretrain_epochs <= 0:
        return preset
    changes = causal_defaults(args)
    if "position_embedding_type" not in cli.user_set(args):
        changes["position_embedding_type"] = "rotary"
    if preset.pretrain_softmax == "adaptive" and args.distributed \
            and "pretrain_softmax" not in cli.user_set(args):  # the preset's: sharding needs the full output layer
        cli.logger.warning("--distributed %s: the causal LM pre-trains through the full softmax (pretrain_softmax=full);"
                           " the adaptive one is trained in one process", args.distributed)
        changes["pretrain_softmax"] = "full"
    return replace(preset, **changes)


def causal_defaults(args) -> dict:
    """A classifier that reads causally (after --pretrain lm, or --init-from a causal LM) pools its last token, the
    only one that has seen the whole text, unless --set classifier_pooling=... says otherwise: from the same LM it
    scored 91.05 % on IMDb test against 89.57 % mean-pooled (validation 90.72 / 90.56; training/NOTES.md)."""
    return {} if "classifier_pooling" in cli.user_set(args) else {"classifier_pooling": "last"}


def pretraining_texts(args, train: datasets.Dataset) -> datasets.Dataset:
    """The texts pre-training reads: the train split's (never validation's or test's) and --unlabeled-file's."""
    texts = train.select_columns(["text"])
    if not args.unlabeled_file:
        return texts
    extra = sources.unlabeled(args.unlabeled_file, args.text_column)
    return datasets.concatenate_datasets([texts, extra.cast(texts.features)])


def pretrain(args, preset, tokenizer, texts, labels, output, stopwatch):
    """Pre-training on `texts` (pretraining_texts: the train split's and --unlabeled-file's): a masked LM on what the
    Transformer reads of each text (head and tail, within its positions), or a causal LM on the texts packed into
    blocks. Returns the folder of the pre-trained weights, or None."""
    if preset.pretrain_epochs <= 0:
        return None
    work = output / resume.WORK
    final = work / "pretrain" / "final"
    if (final / "model.safetensors").exists():  # saved atomically: there means whole
        return final
    resume.enter_phase(output, "pretrain")
    set_seed(args.seed)  # weight initialisation happens before Trainer seeds anything
    phase = replace(preset, **PRETRAINING)
    if preset.pretrain == "lm":
        documents = lm.tokenize(tokenizer, texts).remove_columns(["bytes"])
        corpus = documents.map(lm.pack, batched=True, fn_kwargs={"block_size": preset.max_length}, desc="packing")
        config = common.model_config(tokenizer, phase, is_decoder=True)
        if preset.pretrain_softmax == "adaptive":  # its clusters follow the corpus's token frequencies
            counts = np.bincount(np.ravel(corpus.with_format("numpy")[:]["input_ids"]), minlength=config.vocab_size)
            model = adaptive_softmax.AdaptiveSoftmaxLM(config, counts)
        else:
            model = ScratchformerForCausalLM(config)
        collator = DataCollatorForLanguageModeling(tokenizer, mlm=False)
    elif preset.pretrain in ("mlm", "electra"):
        if preset.pretrain == "mlm":
            model = ScratchformerForMaskedLM(model_config(tokenizer, phase, labels, sparse_prediction=True))
        else:  # the discriminator is the plain Transformer the classifier will read with
            model = electra.ReplacedTokenDetection(common.model_config(tokenizer, phase))
        corpus = texts.map(lambda batch: {"input_ids": encode(tokenizer, batch["text"], preset.max_length,
                                                              preset.head_tokens)},
                           batched=True, remove_columns=["text"])
        collator = DataCollatorForLanguageModeling(tokenizer, mlm=True, mlm_probability=0.15)
    else:
        raise ValueError(f"pretrain={preset.pretrain!r}: expected 'mlm', 'electra' or 'lm'")
    model = distributed.shard(model, args, work / "pretrain")
    trainer = resume.RecipeTrainer(
        model=model,
        args=common.training_arguments(work / "pretrain", phase, args.seed, preset.pretrain_epochs,
                                       **distributed.trainer_settings(args, phase)),
        train_dataset=corpus,
        data_collator=collator,
        processing_class=tokenizer,
        optimizers=(optimizers.optimizer_for(model, phase), None),
    )
    resume.run_phase(trainer, work / "pretrain", args.resume, stopwatch)

    def save(folder):  # with its tokenizer: a folder --init-from can start other classifiers from
        # The recipe's own objectives (ELECTRA, the adaptive softmax) keep only the Transformer the classifier reads;
        # a scratchformer LM is saved whole, as `training.lm` saves it.
        if hasattr(trainer.model, "save_transformer"):
            trainer.model.save_transformer(folder)
        else:
            trainer.model.save_pretrained(folder)
        tokenizer.save_pretrained(folder)

    if distributed.is_sharded(trainer):  # gathering the shards takes every process
        distributed.save_gathered(trainer.model, final)
        if trainer.is_world_process_zero():
            tokenizer.save_pretrained(final)
    elif trainer.is_world_process_zero():
        resume.save_atomically(save, final)
    trainer.accelerator.wait_for_everyone()
    return final


def metrics_for(num_labels: int):
    """Accuracy and F1 from the Trainer's logits (binary F1 for two labels, macro F1 for more)."""
    def compute_metrics(prediction):
        return classification_metrics(num_labels).compute(predictions=np.argmax(prediction.predictions, -1),
                                                          references=prediction.label_ids)
    return compute_metrics


def validation_accuracy(trainer) -> float | None:
    """The saved model's accuracy on validation, from the evaluations during training: the best one where the run
    ended on its best checkpoint, else the last (None where validation was never evaluated)."""
    if trainer.args.load_best_model_at_end and trainer.state.best_metric is not None:
        return trainer.state.best_metric
    scores = [entry["eval_accuracy"] for entry in trainer.state.log_history if "eval_accuracy" in entry]
    return scores[-1] if scores else None


def add_arguments(parser) -> None:
    parser.add_argument("--init-from", default=None, metavar="DIR",
                        help="start from this scratchformer folder (a causal LM from training.lm, a masked LM, a "
                             "classifier): its architecture, weights and tokenizer; only the head starts fresh")
    parser.add_argument("--pretrain", choices=["none", "mlm", "electra", "lm"], default=None,
                        help="pre-train the Transformer on the train texts first: lm (a causal language model), mlm "
                             "(masked) or electra (replaced-token detection: its discriminator collapsed at the CPU "
                             "presets' size, training/NOTES.md); none: no pre-training; default: the preset's (lm for "
                             "cpu-best and gpu, none for cpu-small)")
    parser.add_argument("--unlabeled-file", default=None, metavar="PATH",
                        help="more text for pre-training (.txt: a document per line; a folder of .txt files; CSV, "
                             "JSON or Parquet with a text column)")


def check_pretraining_flags(args) -> None:
    """Refuse (sources.DataError) what no run can honour: --init-from with --pretrain, ELECTRA across processes."""
    if args.init_from and args.pretrain not in (None, "none"):
        raise sources.DataError(f"--init-from {args.init_from} starts from a trained model: --pretrain "
                                f"{args.pretrain} would train another one first; choose one of the two")
    preset = args.preset_values
    if preset.pretrain_softmax not in PRETRAIN_SOFTMAXES:
        raise sources.DataError(f"--set pretrain_softmax={preset.pretrain_softmax}: expected one of "
                                f"{', '.join(PRETRAIN_SOFTMAXES)}")
    chosen = args.pretrain or (preset.pretrain if preset.pretrain_epochs > 0 else "none")
    if chosen == "electra" and args.distributed:
        raise sources.DataError(f"--pretrain electra trains a generator and a discriminator as one module, in one "
                                f"process: --distributed {args.distributed} cannot shard it; pre-train with lm or mlm")
    if chosen == "lm" and preset.pretrain_softmax == "adaptive" and "pretrain_softmax" in cli.user_set(args) \
            and args.distributed:  # a preset's own adaptive softmax falls back to the full one (with_pretraining)
        raise sources.DataError(f"pretrain_softmax=adaptive is the recipe's own module, trained in one process: "
                                f"--distributed {args.distributed} cannot shard it; add --set pretrain_softmax=full")


def starting_point(folder: str):
    """(tokenizer, config) of an --init-from folder, or one clear error saying why it cannot be a starting point."""
    from transformers import AutoTokenizer

    from scratchformer import ScratchformerConfig

    path = Path(folder)
    if not (path / "config.json").is_file():
        raise sources.DataError(f"--init-from {folder}: no config.json there, so it is not a model folder")
    model_type = json.loads((path / "config.json").read_text()).get("model_type")
    if model_type != "scratchformer":
        raise sources.DataError(f"--init-from {folder}: a {model_type!r} model, not a scratchformer one")
    config = ScratchformerConfig.from_pretrained(path)
    if config.is_encoder_decoder:
        raise sources.DataError(f"--init-from {folder}: an encoder-decoder; start a classifier from a causal LM, a "
                                "masked LM or a classifier")
    if not (path / "tokenizer.json").is_file():
        raise sources.DataError(f"--init-from {folder}: no tokenizer.json; the model's own tokenizer must come with it")
    tokenizer = AutoTokenizer.from_pretrained(path)
    if len(tokenizer) != config.vocab_size:
        raise sources.DataError(f"--init-from {folder}: its tokenizer has {len(tokenizer)} tokens but the model "
                                f"{config.vocab_size}; they do not belong together")
    return tokenizer, config


def initialised_config(start, preset: cli.Preset, labels: list[str]):
    """The --init-from folder's architecture (width, depth, positions, causal or not) with this run's head: labels,
    pooling, head-and-tail cut, n-gram path and dropout."""
    config = copy.deepcopy(start)
    head = model_config_settings(preset, labels)
    for name, value in {**head, "hidden_dropout_prob": preset.dropout,
                        "attention_probs_dropout_prob": preset.attention_dropout, "sparse_prediction": False}.items():
        setattr(config, name, value)
    config.architectures = None
    config.validate_scratchformer()
    return config


def read_data(args) -> tuple[sources.Source, list[str]]:
    """The user's labelled texts (training/sources.py), or IMDb's reviews."""
    if sources.given(args):
        return sources.classification(args)
    return common.imdb_source(args), [ID2LABEL[0], ID2LABEL[1]]


def main(argv=None):
    run = cli.start_run(__doc__.splitlines()[0], PRESETS, "runs/imdb-classify", argv, add_arguments)
    if run is None:  # --resume of a run that had finished
        return 0
    args, output, stopwatch = run
    work = output / resume.WORK

    resume.enter_phase(output, "data")
    with resume.data_errors_exit(args, output):
        check_pretraining_flags(args)
        start = starting_point(args.init_from) if args.init_from else None
        source, labels = read_data(args)
        texts = pretraining_texts(args, source.splits["train"])
    data = source.splits
    if sources.given(args):  # IMDb keeps its presets as they are
        preset = cli.sized_to_data(args, args.preset_values, common.text_bytes(data["train"]), len(labels))
        args.preset_values = cli.epochs_for_data(args, preset, len(data["train"]), MIN_STEPS, MAX_STEPS)
    if start is not None:  # the starting model replaces the preset's pre-training (and what it implies: pooling)
        args.preset_values = replace(args.preset_values, pretrain_epochs=0.0)
    args.preset_values = preset = cli.pretraining_for_data(args, with_pretraining(args, args.preset_values),
                                                           common.text_bytes(texts))
    if start is not None:  # the starting model's tokenizer, and no longer inputs than its positions
        tokenizer, start_config = start
        max_length = min(preset.max_length, start_config.max_position_embeddings)
        # The starting model's architecture, so metrics.json and the card say what was trained.
        causal = causal_defaults(args) if start_config.is_decoder else {}
        args.preset_values = preset = replace(
            preset, **causal, max_length=max_length, head_tokens=min(preset.head_tokens, max_length // 2),
            vocab_size=start_config.vocab_size, hidden_size=start_config.hidden_size,
            num_hidden_layers=start_config.num_hidden_layers, num_attention_heads=start_config.num_attention_heads,
            intermediate_size=start_config.intermediate_size,
            position_embedding_type=start_config.position_embedding_type, bigram_buckets=start_config.bigram_buckets)
    else:
        add_bos = preset.classifier_pooling == "cls"  # cls pooling reads the <s> vector
        tokenizer = common.tokenizer_for(common.text_sample(data["train"]), work, preset, add_bos_token=add_bos)
    encoded = data.map(
        lambda batch: {
            "input_ids": encode(tokenizer, batch["text"], preset.max_length, preset.head_tokens, preset.ngram_buckets > 0)
        },
        batched=True,
        remove_columns=["text"],
    )

    pretrained = None if start is not None else pretrain(args, preset, tokenizer, texts, labels, output, stopwatch)
    set_seed(args.seed)
    config = model_config(tokenizer, preset, labels)
    if start is not None:
        config = initialised_config(start_config, preset, labels)
        model = ScratchformerForSequenceClassification.from_pretrained(args.init_from, config=config)
    elif pretrained is not None:
        model = ScratchformerForSequenceClassification.from_pretrained(pretrained, config=config)
    else:
        model = ScratchformerForSequenceClassification(config)
    if preset.ngram_buckets:  # naive-Bayes counts over the train reviews (never validation or test)
        model.fit_ngram_log_count_ratios(encoded["train"]["input_ids"], encoded["train"]["label"], tokenizer=tokenizer,
                                         kind=preset.ngram_ratio)
    model = distributed.shard(model, args, work / "finetune")

    resume.enter_phase(output, "finetune")
    trainer = resume.RecipeTrainer(
        model=model,
        args=common.training_arguments(work / "finetune", preset, args.seed, preset.epochs,
                                       **distributed.trainer_settings(args, preset),
                                       **{"eval_strategy": "epoch",
                                          **cli.best_on_validation(args, preset, "eval_accuracy")}),
        train_dataset=encoded["train"],
        eval_dataset=encoded["validation"],
        data_collator=DataCollatorWithPadding(tokenizer),
        processing_class=tokenizer,
        compute_metrics=metrics_for(len(labels)),
        layer_lr_decay=preset.layer_lr_decay,
        callbacks=[optimizers.GradualUnfreezing(preset.gradual_unfreezing)] if preset.gradual_unfreezing else None,
    )
    resume.run_phase(trainer, work / "finetune", args.resume, stopwatch)
    distributed.continue_in_one_process(args)  # a --distributed run evaluates and publishes in one process

    resume.enter_phase(output, "evaluate")
    split = source.eval_split
    test = trainer.predict(encoded[split], metric_key_prefix="test")
    scores = classification_metrics(len(labels)).compute(predictions=np.argmax(test.predictions, -1),
                                                         references=test.label_ids)
    if trainer.is_world_process_zero():
        resume.enter_phase(output, "baselines")
        baselines = linear_baselines(list(data["train"]["text"]), np.asarray(data["train"]["label"]),
                                     list(data[split]["text"]), np.asarray(data[split]["label"]))
        metrics = {
            **scores,
            "test_loss": test.metrics.get("test_loss"),
            "eval_split": split,
            "baselines": baselines,
            **publishing.data_metrics(source),
            "labels": labels,
            "examples": [text[:200] for text in data[split][:2]["text"]],
            **publishing.base_metrics(args, trainer.model, stopwatch.total(), data),
            "validation_accuracy": validation_accuracy(trainer),
            "pretrained": pretrained is not None,
            **({"pretrain": preset.pretrain, "pretrain_epochs": preset.pretrain_epochs} if pretrained else {}),
            **({"unlabeled_file": args.unlabeled_file} if args.unlabeled_file else {}),
            **({"init_from": args.init_from} if args.init_from else {}),
        }
        # The saved model cuts long reviews itself (head and tail, config.classifier_head_tokens): the tokenizer
        # must not cut them first, or pipeline(..., truncation=True) would read another text than the recipe did.
        tokenizer.model_max_length = VERY_LARGE_INTEGER
        publishing.finish(output, trainer, tokenizer, metrics, "eval_accuracy", f"{source.name} classification (fine-tuning)",
                      data[split][0]["text"])
        linear = ", ".join(f"{name} {result['accuracy']:.4f}" for name, result in baselines.items())
        print(f"{split} accuracy {scores['accuracy']:.4f}  f1 {scores['f1']:.4f}  ({linear})  wall time "
              f"{metrics['wall_time_s']:.0f} s  -> {output}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
