"""The recipes' optimizers: AdamW (Trainer's own) or Muon on the hidden matrices with AdamW on the rest."""

import torch

from .cli import Preset

def hidden_matrices(model: torch.nn.Module) -> list[torch.nn.Parameter]:
    """The 2-D weights of the hidden layers: every trainable matrix but embedding tables, the output layer and a
    classifier (any model: ours, GPT-2's Conv1D, BERT)."""
    outside = {id(p) for m in model.modules() if isinstance(m, torch.nn.Embedding) for p in m.parameters()}
    output = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    if output is not None:
        outside.add(id(output.weight))
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



def optimizer_for(model: torch.nn.Module, preset: Preset):
    """The preset's optimizer when Trainer's own (AdamW) is not it, else None (Trainer builds AdamW)."""
    if preset.optimizer == "adamw":
        return None
    if preset.optimizer == "muon":
        return MuonWithAdamW(model, preset.learning_rate, preset.weight_decay)
    raise ValueError(f"optimizer={preset.optimizer!r}: expected 'adamw' or 'muon'")

