"""One process of a tests/model/test_distributed.py run, started by torchrun (gloo on CPU, 127.0.0.1).

    torchrun --nproc_per_node 2 tests/model/distributed_worker.py inference MODE MODELS OUT   # MODE: fsdp, tp, pp, hsdp
    torchrun --nproc_per_node 2 tests/model/distributed_worker.py refusals MODELS OUT
    torchrun --nproc_per_node 2 tests/model/distributed_worker.py train MODEL OUT [--kill-after=STEP] [--resume]
    python tests/model/distributed_worker.py train MODEL OUT        # the same training in one process: the reference

Each compares what transformers' DistributedConfig gives against the same folder in one process, and rank 0 writes
the figures to OUT (JSON) for the test to judge.
"""

import json
import os
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from scratchformer import (  # noqa: E402
    ScratchformerForCausalLM,
    ScratchformerForConditionalGeneration,
    ScratchformerForMaskedLM,
    ScratchformerForSequenceClassification,
)

HEADS = {
    "causal": ScratchformerForCausalLM,
    "masked": ScratchformerForMaskedLM,
    "classify": ScratchformerForSequenceClassification,
    "seq2seq": ScratchformerForConditionalGeneration,
}
MODES = {
    "fsdp": dict(fsdp_size=2),
    "hsdp": dict(fsdp_size=2, dp_replicate_size=2),
    "tp": dict(tp_size=2),
    "pp": dict(pp_size=2),
}
RANK = int(os.environ.get("RANK", 0))


def is_sharded(model) -> bool:
    from torch.distributed.tensor import DTensor

    return any(isinstance(p, DTensor) for p in model.parameters())


def full(tensor: torch.Tensor) -> torch.Tensor:
    return tensor.full_tensor() if hasattr(tensor, "full_tensor") else tensor


def inference(mode: str, models: Path, out: Path) -> None:
    """Logits (and greedy generate() where the head generates) of every head, sharded against one process."""
    from transformers.distributed import DistributedConfig

    torch.manual_seed(0)
    ids = torch.randint(5, 200, (2, 12))
    mask = torch.ones_like(ids)
    mask[1, 9:] = 0  # one padded row
    results = {}
    for head, cls in HEADS.items():
        folder = models / head
        reference = cls.from_pretrained(folder).eval()
        inputs = dict(input_ids=ids, attention_mask=mask)
        if head == "seq2seq":
            inputs["decoder_input_ids"] = ids[:, :5]
        try:
            model = cls.from_pretrained(folder, distributed_config=DistributedConfig(**MODES[mode])).eval()
        except ValueError as error:
            results[head] = {"error": str(error)}
            continue
        with torch.no_grad():
            difference = (full(model(**inputs).logits) - reference(**inputs).logits).abs().max().item()
        result = {"max_logit_difference": difference, "sharded": is_sharded(model)}
        if head in ("causal", "seq2seq"):
            expected = reference.generate(ids[:1], max_new_tokens=6, do_sample=False)
            result["generate_equal"] = torch.equal(model.generate(ids[:1], max_new_tokens=6, do_sample=False), expected)
        results[head] = result
    if RANK == 0:
        out.write_text(json.dumps(results))


def refusals(models: Path, out: Path) -> None:
    """What the plans cannot do, asked of two processes: the error each request gets."""
    from transformers.distributed import DistributedConfig

    requests = {
        "tp_size=2, 3 heads": (models / "three_heads", dict(tp_size=2)),
        "fsdp_size=4 on 2 processes": (models / "causal", dict(fsdp_size=4)),
        "pp_size=2, classifier": (models / "classify", dict(pp_size=2)),
    }
    errors = {}
    for name, (folder, sizes) in requests.items():
        cls = HEADS["classify"] if "classif" in name else ScratchformerForCausalLM
        try:
            cls.from_pretrained(folder, distributed_config=DistributedConfig(**sizes))
            errors[name] = None
        except (ValueError, RuntimeError) as error:
            errors[name] = f"{type(error).__name__}: {error}"
    if RANK == 0:
        out.write_text(json.dumps(errors))


def train(model_folder: Path, out: Path, kill_after: int | None = None, resume: bool = False) -> None:
    """Six RecipeTrainer steps on a tiny causal LM, a checkpoint every two: FSDP2 over the processes when torchrun
    started several. `kill_after`: every process dies (os._exit) right after that step's checkpoint; `resume`:
    continue from the last complete checkpoint, as a recipe's --resume does."""
    import datasets
    from transformers import TrainerCallback, TrainingArguments
    from transformers.distributed import DistributedConfig

    from training.resume import RecipeTrainer, last_complete_checkpoint

    world = int(os.environ.get("WORLD_SIZE", 1))
    distributed = {} if world == 1 else {"distributed_config": DistributedConfig(fsdp_size=world)}
    model = ScratchformerForCausalLM.from_pretrained(model_folder, **distributed)
    generator = torch.Generator().manual_seed(0)
    rows = torch.randint(5, 200, (32, 16), generator=generator).tolist()
    data = datasets.Dataset.from_dict({"input_ids": rows, "labels": rows})
    arguments = TrainingArguments(
        output_dir=str(out / "trainer"), per_device_train_batch_size=8 // world, max_steps=6, learning_rate=3e-3,
        logging_steps=1, save_strategy="steps", save_steps=2, save_only_model=world > 1, report_to=[], use_cpu=True,
        seed=0, disable_tqdm=True,
    )
    trainer = RecipeTrainer(model=model, args=arguments, train_dataset=data)

    class Kill(TrainerCallback):
        def on_save(self, args, state, control, **kwargs):
            if state.global_step == kill_after:
                torch.distributed.barrier() if torch.distributed.is_initialized() else None
                os._exit(0)

    if kill_after:
        trainer.add_callback(Kill())  # after CheckpointManifest: the checkpoint is complete when the run dies
    trainer.train(resume_from_checkpoint=last_complete_checkpoint(out / "trainer") if resume else None)
    trainer.save_model(str(out / "model"))
    if RANK == 0:
        losses = {entry["step"]: entry["loss"] for entry in trainer.state.log_history if "loss" in entry}
        (out / "losses.json").write_text(json.dumps(losses))


if __name__ == "__main__":
    task, *arguments = sys.argv[1:]
    if task == "inference":
        inference(arguments[0], Path(arguments[1]), Path(arguments[2]))
    elif task == "refusals":
        refusals(Path(arguments[0]), Path(arguments[1]))
    else:
        kill_after = int(arguments[2].split("=")[1]) if len(arguments) > 2 and arguments[2].startswith("--kill") else None
        train(Path(arguments[0]), Path(arguments[1]), kill_after, resume="--resume" in arguments)
    if torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()
