"""The recipes' optimizers: AdamW (Trainer's own) or Muon on the hidden matrices with AdamW on the rest, and
ULMFiT's discriminative learning rates (a rate per layer) and gradual unfreezing for fine-tuning."""

import re
from collections import defaultdict
from typing import TYPE_CHECKING

import torch
from transformers import TrainerCallback

if TYPE_CHECKING:  # cli imports the Trainer side (resume.py), which imports this file
    from .cli import Preset

def hidden_matrices(model: torch.nn.Module) -> list[torch.nn.Parameter]:
    """The 2-D weights of the hidden layers: every trainable matrix but embedding tables, the output layer and a
    classifier (any model: ours, GPT-2's Conv1D, BERT)."""
    outside = {id(p) for m in model.modules() if isinstance(m, torch.nn.Embedding) for p in m.parameters()}
    output = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    if output is not None:  # all of it: an adaptive softmax has several matrices
        outside.update(id(p) for p in output.parameters())
    return [p for name, p in model.named_parameters() if p.requires_grad and p.ndim == 2 and id(p) not in outside
            and "classifier" not in name and not name.startswith("score")]



class MuonWithAdamW(torch.optim.Optimizer):
    """Muon (torch.optim.Muon) on the hidden 2-D weight matrices, AdamW on embeddings, norms and biases: one optimizer,
    so that Trainer's scheduler sets both learning rates and its checkpoints save and restore both states.

    Muon's update is scaled to AdamW's size (adjust_lr_fn="match_rms_adamw"), so one learning rate serves both."""

    def __init__(self, model: torch.nn.Module, lr: float, weight_decay: float):
        hidden = hidden_matrices(model)
        hidden_ids = {id(p) for p in hidden}
        rest = [p for p in model.parameters() if p.requires_grad and id(p) not in hidden_ids]
        self.muon = torch.optim.Muon(hidden, lr=lr, weight_decay=weight_decay, adjust_lr_fn="match_rms_adamw")
        self.adamw = torch.optim.AdamW(rest, lr=lr, weight_decay=0.0)  # embeddings, norms, biases: not decayed
        super().__init__(self.muon.param_groups + self.adamw.param_groups, {})  # the same group dicts: one schedule
        self._share_state()

    def _share_state(self) -> None:
        """Point both inner optimizers at this one's groups and state (load_state_dict replaces both objects)."""
        count = len(self.muon.param_groups)
        self.muon.param_groups, self.adamw.param_groups = self.param_groups[:count], self.param_groups[count:]
        self.muon.state = self.adamw.state = self.state

    def load_state_dict(self, state_dict) -> None:
        super().load_state_dict(state_dict)
        self._share_state()

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        self.muon.step()
        self.adamw.step()
        return loss



def optimizer_for(model: torch.nn.Module, preset: "Preset"):
    """The preset's optimizer when Trainer's own (AdamW) is not it, else None (Trainer builds AdamW)."""
    if preset.optimizer == "adamw":
        return None
    if preset.optimizer == "muon":
        return MuonWithAdamW(model, preset.learning_rate, preset.weight_decay)
    raise ValueError(f"optimizer={preset.optimizer!r}: expected 'adamw' or 'muon'")


def layer_depth(name: str, num_layers: int) -> int:
    """Where a parameter sits: 0 for the embeddings, i + 1 for block i, num_layers + 1 above the blocks (final norm,
    classifier, n-gram path)."""
    block = re.search(r"(?:^|\.)layers\.(\d+)\.", name)
    if block:
        return int(block.group(1)) + 1
    return 0 if re.search(r"(?:^|\.)embeddings\.", name) else num_layers + 1


class LayerwiseRates:
    """Trainer mixin: ULMFiT's discriminative fine-tuning (Howard & Ruder 2018, section 3.2). Trainer's AdamW groups
    are split by depth, and each layer learns at `layer_lr_decay` times the rate of the layer above it (the top, the
    heads, at the full rate): the general features of a pre-trained body move less than the task's head. 1.0 leaves
    Trainer's optimizer as it is. The scheduler scales every group's rate alike."""

    def __init__(self, *args, layer_lr_decay: float = 1.0, **kwargs):
        super().__init__(*args, **kwargs)
        self.layer_lr_decay = layer_lr_decay

    def create_optimizer(self, model=None):
        built_here = self.optimizer is None  # a recipe's own optimizer (Muon) is left alone
        optimizer = super().create_optimizer(model)
        if not built_here or self.layer_lr_decay == 1.0:
            return optimizer
        num_layers = self.model.config.num_hidden_layers
        depth = {id(p): layer_depth(name, num_layers) for name, p in self.model.named_parameters()}
        groups, optimizer.param_groups = optimizer.param_groups, []  # no step yet: no state to carry
        for group in groups:  # Trainer's: with weight decay, without
            by_depth = defaultdict(list)
            for parameter in group["params"]:
                by_depth[depth[id(parameter)]].append(parameter)
            for d, params in sorted(by_depth.items()):
                rate = group["lr"] * self.layer_lr_decay ** (num_layers + 1 - d)
                optimizer.add_param_group({**group, "params": params, "lr": rate})
        return optimizer


class GradualUnfreezing(TrainerCallback):
    """ULMFiT's gradual unfreezing (Howard & Ruder 2018, section 3.2): fine-tuning starts with only the top (the
    classifier, the n-gram path, the final norm) trainable, and the layers below join one at a time from the top, the
    embeddings last, at even intervals over `fraction` of the run's steps; the rest of the run trains everything.
    A pre-trained body is not pulled around by a head that starts at random. The trainable set follows from the global
    step alone, so a resumed run freezes what the killed one had frozen. (Trainer builds its optimizer over every
    parameter first: a frozen one gets no gradient, so the optimizer skips it until it thaws.)"""

    def __init__(self, fraction: float):
        self.fraction = fraction

    def on_step_begin(self, args, state, control, model=None, **kwargs):
        self.set_trainable(model, state.global_step, state.max_steps)  # before each step's forward, resumed ones too

    def lowest_trainable_depth(self, step: int, max_steps: int, num_layers: int) -> int:
        """The lowest layer_depth that trains at `step`: num_layers + 1 (the top alone) down to 0 (everything)."""
        stage = max(1.0, self.fraction * max_steps / (num_layers + 1))  # steps between two layers joining
        return max(0, num_layers + 1 - int(step // stage))

    def set_trainable(self, model, step: int, max_steps: int) -> None:
        num_layers = model.config.num_hidden_layers
        lowest = self.lowest_trainable_depth(step, max_steps, num_layers)
        for name, parameter in model.named_parameters():
            parameter.requires_grad_(layer_depth(name, num_layers) >= lowest)
