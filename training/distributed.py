"""A recipe on several processes or machines, sharded by transformers' own DistributedConfig (FSDP2, HSDP, tensor
parallel), started by torchrun:

    torchrun --nproc_per_node 2 -m training.lm --distributed fsdp=2
    # two machines with two processes each: shard inside a machine, replicate across (HSDP). On each machine:
    torchrun --nnodes 2 --node_rank 0 --nproc_per_node 2 --master_addr FIRST_MACHINE --master_port 29500 \\
        -m training.lm --distributed fsdp=2,replicate=2 --output-dir /shared/run        # node_rank 1 on the other

`--distributed` names the sizes (`fsdp`, `replicate`, `tp`); their product is the number of processes. Each model a
phase trains is sharded as transformers loads it, so the fresh weights go through a folder first (`shard`). On
several machines, --output-dir must be a folder they share (as the Trainer's checkpoints need anyway).

Checkpoints resume exactly, as on one process. transformers' Trainer saves a model sharded at load time without its
optimizer (it refuses to checkpoint one unless told `save_only_model=True`), so `ShardedCheckpoints` adds the
sharded optimizer state (torch.distributed.checkpoint, each process its own shard), the scheduler and every
process's RNG state to each checkpoint, and loads them all on `--resume` (the weights too, into the shards).

When training ends, everything after it (evaluation, baselines, the published folder) runs in one process: the
first process starts the same command again with `--resume` in one process, which takes the trained weights from
the last checkpoint instead of training.

The preset's batch is divided between the processes, so a --distributed run optimises as the one-process run does.
"""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import torch

# The flag's names for DistributedConfig's sizes.
SIZES = {"fsdp": "fsdp_size", "replicate": "dp_replicate_size", "tp": "tp_size"}
OPTIMIZER_FOLDER = "optimizer-shards"
SCHEDULER_FILE = "scheduler.pt"


def parse_sizes(text: str | None, check_processes: bool = True) -> dict[str, int]:
    """`fsdp=2,replicate=2` -> DistributedConfig's keyword arguments; a clear error for anything else, and (with
    check_processes) for sizes whose product is not the number of processes torchrun started."""
    if not text:
        return {}
    sizes = {}
    for part in text.split(","):
        name, sep, value = part.strip().partition("=")
        if name == "pp":
            raise ValueError("--distributed pp=...: transformers' pipeline parallel runs inference only (its stages "
                             "have no backward pass); train with fsdp, replicate or tp")
        if not sep or name not in SIZES or not value.isdigit() or int(value) < 1:
            raise ValueError(f"--distributed {text!r}: expected NAME=SIZE[,NAME=SIZE] with NAME one of "
                             f"{', '.join(SIZES)} and SIZE a positive integer")
        sizes[SIZES[name]] = int(value)
    if sizes.get("tp_size", 1) > 1 and not torch.cuda.is_available():
        raise ValueError(f"--distributed {text!r}: the Trainer trains a tensor-parallel model through accelerate's "
                         "ParallelismConfig, which refuses CPU processes (DistributedType.MULTI_CPU); on CPU shard with "
                         "fsdp and replicate (tensor-parallel inference works on CPU: from_pretrained(..., "
                         "distributed_config=DistributedConfig(tp_size=2)))")
    if not check_processes:
        return sizes
    world = int(os.environ.get("WORLD_SIZE", 1))
    product = sizes.get("fsdp_size", 1) * sizes.get("dp_replicate_size", 1) * sizes.get("tp_size", 1)
    if product != world:
        raise ValueError(f"--distributed {text!r} asks for {product} processes, but {world} were started; start "
                         f"them with torchrun (e.g. torchrun --nproc_per_node {product} -m training.<recipe> ...)")
    return sizes


AFTER_TRAINING = "SCRATCHFORMER_AFTER_DISTRIBUTED_TRAINING"  # set for the one-process rerun


def after_training() -> bool:
    """Whether this is the one-process rerun that evaluates and publishes a --distributed run."""
    return bool(os.environ.get(AFTER_TRAINING))


def sizes_for_this_process(text: str | None) -> tuple[dict[str, int], dict[str, int]]:
    """(DistributedConfig's sizes for this process, the sizes the run trains or trained with). The one-process rerun
    after training gets no sizes of its own: it loads the gathered weights whole."""
    sizes = parse_sizes(text, check_processes=not after_training())
    return ({} if after_training() else sizes), sizes


def trainer_settings(args, preset) -> dict:
    """TrainingArguments of a --distributed run: the preset's batch divided between the processes that read different
    rows (fsdp x replicate; tensor-parallel ones share theirs), so the optimisation is the one-process run's; and no
    Trainer-saved optimizer (ShardedCheckpoints saves it)."""
    if not args.trained_sizes:
        return {}
    readers = args.trained_sizes.get("fsdp_size", 1) * args.trained_sizes.get("dp_replicate_size", 1)
    if preset.batch_size % readers:
        raise SystemExit(f"error: --distributed {args.distributed}: the batch of {preset.batch_size} rows does not "
                         f"divide between {readers} processes; --set batch_size=... to a multiple of {readers}")
    return {"save_only_model": True, "per_device_train_batch_size": preset.batch_size // readers}


def load_trained(trainer, checkpoint: str) -> None:
    """The one-process rerun's training phase: the gathered weights and the Trainer state (the curves) of the last
    checkpoint, and no step (a one-process Trainer would count the epochs in more, smaller steps and go on)."""
    from transformers import TrainerState

    trainer._load_from_checkpoint(checkpoint)
    trainer.state = TrainerState.load_from_json(os.path.join(checkpoint, "trainer_state.json"))


def shard(model, args, folder: Path):
    """The model as transformers shards it with args.distributed_sizes (unchanged without them). The first process
    writes the fresh weights (every process holds the same: they are seeded alike) and every process loads them."""
    if not args.distributed_sizes:
        return model
    from transformers.distributed import DistributedConfig

    path = folder / "initial-weights"
    model.save_pretrained(path)  # the first process writes
    torch.distributed.barrier()
    return type(model).from_pretrained(path, distributed_config=DistributedConfig(**args.distributed_sizes))


def save_gathered(model, path: Path) -> None:
    """A sharded model saved whole at path, atomically: every process takes part in gathering, the first writes."""
    first = int(os.environ.get("RANK", 0)) == 0
    tmp = path.with_name(path.name + ".tmp")
    if first:
        shutil.rmtree(tmp, ignore_errors=True)
    torch.distributed.barrier()
    model.save_pretrained(tmp)
    torch.distributed.barrier()
    if first:
        shutil.rmtree(path, ignore_errors=True)
        os.replace(tmp, path)
    torch.distributed.barrier()


def is_sharded(trainer) -> bool:
    return getattr(trainer, "is_distributed_loading_by_transformers", False)


class ShardedCheckpoints:
    """Trainer mixin: exact resume for a model sharded at load time (see the module docstring)."""

    def _save_checkpoint(self, model, trial):
        super()._save_checkpoint(model, trial)
        if not is_sharded(self):
            return
        from transformers.distributed.checkpoint import save_optimizer_distributed

        checkpoint = os.path.join(self._get_output_dir(trial=trial), f"checkpoint-{self.state.global_step}")
        save_optimizer_distributed(self.model, self.optimizer, os.path.join(checkpoint, OPTIMIZER_FOLDER))
        if self.args.should_save:
            torch.save(self.lr_scheduler.state_dict(), os.path.join(checkpoint, SCHEDULER_FILE))
        self._save_rng_state(checkpoint)

    def _load_from_checkpoint(self, checkpoint, model=None):
        if not is_sharded(self):
            return super()._load_from_checkpoint(checkpoint, model)
        from safetensors.torch import load_file
        from torch.distributed.checkpoint.state_dict import StateDictOptions, set_model_state_dict

        # The checkpoint holds the gathered weights (tied ones once): each process takes its shards of them.
        weights = load_file(os.path.join(checkpoint, "model.safetensors"))
        set_model_state_dict(self.model, weights, options=StateDictOptions(full_state_dict=True, strict=False))

    def _load_optimizer_and_scheduler(self, checkpoint):
        optimizer = os.path.join(checkpoint or "", OPTIMIZER_FOLDER)
        if checkpoint is None or not is_sharded(self):
            if checkpoint is not None and os.path.isdir(optimizer):
                return  # the one-process rerun after training: it evaluates, the optimizer's shards stay unread
            return super()._load_optimizer_and_scheduler(checkpoint)
        from transformers.distributed.checkpoint import load_optimizer_distributed

        if not os.path.isdir(optimizer):
            raise ValueError(f"{checkpoint} has no sharded optimizer state ({OPTIMIZER_FOLDER}/): it was not written "
                             "by a --distributed run, so it cannot resume one")
        load_optimizer_distributed(self.model, self.optimizer, optimizer)
        self.lr_scheduler.load_state_dict(torch.load(os.path.join(checkpoint, SCHEDULER_FILE), weights_only=True))


def continue_in_one_process(args) -> None:
    """After the last training phase of a --distributed run: the first process reruns the command in one process
    (with --resume, marked AFTER_TRAINING) to evaluate and publish; every process then exits with its status."""
    if not args.distributed_sizes:
        return
    main = sys.modules["__main__"].__spec__
    if main is None:
        raise SystemExit("error: --distributed runs a recipe as a module: torchrun ... -m training.<recipe> ...")
    torch.distributed.barrier()
    status = 0
    if int(os.environ.get("RANK", 0)) == 0:
        argv = [argument for argument in sys.argv[1:] if argument != "--resume"]
        environment = {k: v for k, v in os.environ.items() if k not in TORCHRUN_VARIABLES} | {AFTER_TRAINING: "1"}
        status = subprocess.run([sys.executable, "-m", main.name, *argv, "--resume"], env=environment).returncode
    torch.distributed.barrier()
    torch.distributed.destroy_process_group()
    raise SystemExit(status)


TORCHRUN_VARIABLES = {"RANK", "LOCAL_RANK", "WORLD_SIZE", "LOCAL_WORLD_SIZE", "GROUP_RANK", "ROLE_RANK",
                      "ROLE_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT", "TORCHELASTIC_RUN_ID", "TORCHELASTIC_RESTART_COUNT",
                      "TORCHELASTIC_MAX_RESTARTS", "TORCHELASTIC_USE_AGENT_STORE", "GROUP_WORLD_SIZE", "ROLE_NAME"}
