"""training.optimizers.MuonWithAdamW: which parameters get Muon, one schedule for both, and exact resume."""

import copy

import torch
from conftest import tiny_config
from transformers import GPT2Config, GPT2LMHeadModel, get_linear_schedule_with_warmup

from scratchformer import ScratchformerForCausalLM
from training.optimizers import MuonWithAdamW, hidden_matrices


def batch(seed: int) -> torch.Tensor:
    return torch.randint(0, 400, (2, 16), generator=torch.Generator().manual_seed(seed))


def step(model, optimizer, scheduler, seed: int) -> None:
    ids = batch(seed)
    model(input_ids=ids, labels=ids).loss.backward()
    optimizer.step()
    scheduler.step()
    optimizer.zero_grad()


def test_muon_gets_the_hidden_matrices_and_adamw_the_rest():
    model = ScratchformerForCausalLM(tiny_config(is_decoder=True))
    optimizer = MuonWithAdamW(model, lr=1e-2, weight_decay=0.01)
    names = {id(p): n for n, p in model.named_parameters()}
    muon = {names[id(p)] for g in optimizer.muon.param_groups for p in g["params"]}
    adamw = {names[id(p)] for g in optimizer.adamw.param_groups for p in g["params"]}
    assert muon == {n for n, p in model.named_parameters() if p.ndim == 2 and ".layers." in n}
    assert adamw == set(names.values()) - muon  # embeddings (tied with the output layer), norms, biases
    gpt2 = GPT2LMHeadModel(GPT2Config(n_embd=32, n_layer=1, n_head=2, vocab_size=50))
    assert {n for n, p in gpt2.named_parameters() if any(p is q for q in hidden_matrices(gpt2))} == {
        "transformer.h.0.attn.c_attn.weight", "transformer.h.0.attn.c_proj.weight",
        "transformer.h.0.mlp.c_fc.weight", "transformer.h.0.mlp.c_proj.weight"}


def test_the_scheduler_sets_both_learning_rates():
    model = ScratchformerForCausalLM(tiny_config(is_decoder=True))
    optimizer = MuonWithAdamW(model, lr=1e-2, weight_decay=0.01)
    scheduler = get_linear_schedule_with_warmup(optimizer, 2, 10)
    for seed in range(3):
        step(model, optimizer, scheduler, seed)
    rates = {g["lr"] for inner in (optimizer.muon, optimizer.adamw) for g in inner.param_groups}
    assert rates == {scheduler.get_last_lr()[0]} and 0 < rates.pop() < 1e-2


def test_a_restored_state_continues_exactly():
    torch.manual_seed(0)
    model = ScratchformerForCausalLM(tiny_config(is_decoder=True))
    optimizer = MuonWithAdamW(model, lr=1e-2, weight_decay=0.01)
    scheduler = get_linear_schedule_with_warmup(optimizer, 2, 10)
    for seed in range(3):
        step(model, optimizer, scheduler, seed)
    saved = copy.deepcopy((model.state_dict(), optimizer.state_dict(), scheduler.state_dict()))
    for seed in range(3, 5):
        step(model, optimizer, scheduler, seed)

    resumed = ScratchformerForCausalLM(tiny_config(is_decoder=True))
    resumed.load_state_dict(saved[0])
    resumed_optimizer = MuonWithAdamW(resumed, lr=1e-2, weight_decay=0.01)
    resumed_scheduler = get_linear_schedule_with_warmup(resumed_optimizer, 2, 10)
    resumed_optimizer.load_state_dict(saved[1])  # in Trainer's order: both built, then both states loaded
    resumed_scheduler.load_state_dict(saved[2])
    assert resumed_optimizer.muon.state is resumed_optimizer.state  # still one state after loading
    for seed in range(3, 5):
        step(resumed, resumed_optimizer, resumed_scheduler, seed)
    for (name, a), b in zip(model.state_dict().items(), resumed.state_dict().values()):
        assert torch.equal(a, b), name
