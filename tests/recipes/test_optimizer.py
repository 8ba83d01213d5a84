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


def layerwise_trainer(tmp_path, decay: float):
    from transformers import TrainingArguments

    from scratchformer import ScratchformerForSequenceClassification
    from training.resume import RecipeTrainer

    model = ScratchformerForSequenceClassification(tiny_config(num_hidden_layers=2, num_labels=3, ngram_buckets=64))
    args = TrainingArguments(output_dir=str(tmp_path), learning_rate=1e-3, weight_decay=0.01, report_to=[],
                             use_cpu=True, max_steps=4, warmup_steps=1)
    return model, RecipeTrainer(model=model, args=args, layer_lr_decay=decay)


def test_layer_depths():
    from training.optimizers import layer_depth

    assert [layer_depth(n, 2) for n in ("model.embeddings.token_embeddings.weight", "model.layers.0.mlp.fc_in.bias",
                                        "model.layers.1.attention.q_proj.weight", "model.final_norm.weight",
                                        "classifier.weight", "ngram_logits.weight")] == [0, 1, 2, 3, 3, 3]
    assert layer_depth("base_model.model.model.layers.11.attention.q_proj.lora_A.default.weight", 12) == 12


def test_discriminative_rates_fall_by_the_decay_per_layer_below_the_head(tmp_path):
    model, trainer = layerwise_trainer(tmp_path, 0.5)
    optimizer = trainer.create_optimizer()
    names = {id(p): n for n, p in model.named_parameters()}
    rate, decay = {}, {}
    for group in optimizer.param_groups:
        for p in group["params"]:
            assert names[id(p)] not in rate, "each parameter in one group"
            rate[names[id(p)]], decay[names[id(p)]] = group["lr"], group["weight_decay"]
    assert rate.keys() == {n for n, p in model.named_parameters() if p.requires_grad}
    assert rate["classifier.weight"] == rate["model.final_norm.weight"] == 1e-3
    assert rate["model.layers.1.mlp.fc_in.weight"] == 5e-4 and rate["model.layers.0.attention.o_proj.bias"] == 2.5e-4
    assert rate["model.embeddings.token_embeddings.weight"] == 1.25e-4
    # Trainer's own weight-decay rule is kept: matrices decay, biases and norms do not.
    assert decay["model.layers.0.mlp.fc_in.weight"] == 0.01 and decay["model.layers.0.mlp.fc_in.bias"] == 0.0
    assert decay["model.layers.0.attention_residual.norm.weight"] == 0.0
    # The schedule scales every group alike: the ratios survive warm-up and decay.
    scheduler = trainer.create_scheduler(4, optimizer)
    for _ in range(2):
        optimizer.step()
        scheduler.step()
    top = max(g["lr"] for g in optimizer.param_groups)
    assert 0 < top < 1e-3 and sorted({round(g["lr"] / top, 6) for g in optimizer.param_groups}) == [0.125, 0.25, 0.5, 1]


def test_one_rate_leaves_trainers_optimizer_as_it_is(tmp_path):
    _, trainer = layerwise_trainer(tmp_path, 1.0)
    optimizer = trainer.create_optimizer()
    assert len(optimizer.param_groups) == 2 and {g["lr"] for g in optimizer.param_groups} == {1e-3}


def test_gradual_unfreezing_thaws_the_layers_top_down_over_its_fraction_of_the_steps(tmp_path):
    from transformers import TrainerCallback, TrainingArguments

    from scratchformer import ScratchformerForSequenceClassification
    from training.optimizers import GradualUnfreezing, layer_depth
    from training.resume import RecipeTrainer

    torch.manual_seed(0)
    model = ScratchformerForSequenceClassification(tiny_config(num_hidden_layers=2, num_labels=3))
    rows = [{"input_ids": torch.randint(5, 400, (12,)), "labels": torch.tensor(i % 3)} for i in range(64)]

    class MovedDepths(TrainerCallback):  # the layer depths whose weights each optimizer step changed
        def __init__(self):
            self.last, self.moved = self.weights(), []

        def weights(self):
            return {name: p.detach().clone() for name, p in model.named_parameters()}

        def on_step_end(self, args, state, control, **kwargs):
            now = self.weights()
            self.moved.append(sorted({layer_depth(name, 2) for name in now if not torch.equal(now[name], self.last[name])}))
            self.last = now

    moved = MovedDepths()
    args = TrainingArguments(output_dir=str(tmp_path), learning_rate=1e-2, max_steps=8, per_device_train_batch_size=8,
                             report_to=[], use_cpu=True, save_strategy="no")
    RecipeTrainer(model=model, args=args, train_dataset=rows, callbacks=[GradualUnfreezing(0.5), moved]).train()
    # Half of 8 steps over 3 joins (block 2, block 1, the embeddings): one every 4/3 steps, the top from the start.
    assert moved.moved == [[3], [3], [2, 3], [1, 2, 3]] + [[0, 1, 2, 3]] * 4
    assert all(p.requires_grad for p in model.parameters())
    # Only the step decides (a resumed run freezes what the killed one had frozen): 4 layers of 24 steps over 0.25.
    assert [GradualUnfreezing(0.25).lowest_trainable_depth(step, 24, 4) for step in (0, 1, 2, 5, 6, 23)] == [5, 5, 4, 1, 0, 0]
