"""PEFT (LoRA) on the causal LM and the classifier: default targets, only the adapter trains (with Trainer), the
adapter saves alone, reloads from the Hub onto a remote-code base where scratchformer is not importable, and
merge_and_unload() keeps the adapted outputs."""

import pytest
import torch
from conftest import sentiment_corpus, tiny_config
from datasets import Dataset
from test_hub_roundtrip import run_child
from hub_fixture import hub, hub_server  # noqa: F401  (pytest fixtures)
from transformers import DataCollatorForLanguageModeling, DataCollatorWithPadding, Trainer, TrainingArguments

from scratchformer import ScratchformerForCausalLM, ScratchformerForSequenceClassification

peft = pytest.importorskip("peft")

TASKS = {  # head: PEFT task type
    ScratchformerForCausalLM: "CAUSAL_LM",
    ScratchformerForSequenceClassification: "SEQ_CLS",
}


def tiny(head, tokenizer):
    torch.manual_seed(0)
    config = tiny_config(vocab_size=len(tokenizer), pad_token_id=tokenizer.pad_token_id, num_labels=2)
    return head(config).eval()


def dataset(tokenizer, head):
    texts, labels = sentiment_corpus(48)
    rows = tokenizer(texts)
    if head is ScratchformerForSequenceClassification:
        return Dataset.from_dict({**rows, "labels": labels}), DataCollatorWithPadding(tokenizer)
    return Dataset.from_dict(dict(rows)), DataCollatorForLanguageModeling(tokenizer, mlm=False)


@pytest.fixture(params=list(TASKS), ids=lambda head: TASKS[head])
def adapted(request, tokenizer, tmp_path):
    """(base state before, PEFT model after Trainer fine-tuned its adapter, head class)."""
    head = request.param
    model = tiny(head, tokenizer)
    base_before = {k: v.clone() for k, v in model.state_dict().items()}
    peft_model = peft.get_peft_model(model, peft.LoraConfig(task_type=TASKS[head], r=4, lora_alpha=8))
    train, collator = dataset(tokenizer, head)
    arguments = TrainingArguments(output_dir=str(tmp_path / "trainer"), num_train_epochs=3, per_device_train_batch_size=8,
                                  learning_rate=1e-2, report_to=[], save_strategy="no", use_cpu=True, logging_steps=5)
    Trainer(model=peft_model, args=arguments, train_dataset=train, data_collator=collator).train()
    return base_before, peft_model.eval(), head


def test_the_default_targets_are_the_query_and_value_projections(adapted):
    _, peft_model, head = adapted
    assert peft_model.peft_config["default"].target_modules == {"q_proj", "v_proj"}
    wrapped = [n for n, m in peft_model.named_modules() if isinstance(m, peft.tuners.lora.LoraLayer)]
    assert len(wrapped) == 4 and all(n.endswith(("attention.q_proj", "attention.v_proj")) for n in wrapped)


def test_only_the_adapter_trains_and_it_changes_the_outputs(adapted, tokenizer):
    base_before, peft_model, head = adapted
    trainable = {n for n, p in peft_model.named_parameters() if p.requires_grad}
    assert trainable and all("lora_" in n or "classifier" in n for n in trainable), trainable
    for name, tensor in peft_model.get_base_model().state_dict().items():
        original = name.replace(".base_layer", "")
        if "lora_" not in name and "modules_to_save" not in name and original in base_before:
            if not original.startswith("classifier"):  # the head is trained (modules_to_save) for SEQ_CLS
                assert torch.equal(tensor, base_before[original]), name
    batch = tokenizer(["honestly a great film."], return_tensors="pt")
    with torch.no_grad():
        adapted_logits = peft_model(**batch).logits
        with peft_model.disable_adapter():
            base_logits = peft_model(**batch).logits
    assert not torch.allclose(adapted_logits, base_logits, atol=1e-4)  # the LoRA branch really runs


def test_merge_and_unload_gives_the_adapted_outputs(adapted, tokenizer):
    _, peft_model, head = adapted
    batch = tokenizer(["honestly a great film.", "so dull"], return_tensors="pt", padding=True)
    with torch.no_grad():
        expected = peft_model(**batch).logits
        merged = peft_model.merge_and_unload()
        assert type(merged) is head
        torch.testing.assert_close(merged(**batch).logits, expected, atol=1e-5, rtol=1e-4)


def test_the_adapter_saves_alone_and_reloads_from_the_hub_where_scratchformer_is_absent(adapted, tokenizer, hub, tmp_path):
    base_before, peft_model, head = adapted
    base_dir, adapter_dir = tmp_path / "base", tmp_path / "adapter"
    base = tiny(head, tokenizer)
    base.load_state_dict(base_before)
    base.save_pretrained(base_dir)
    tokenizer.save_pretrained(base_dir)
    peft_model.save_pretrained(adapter_dir)
    adapter_bytes = (adapter_dir / "adapter_model.safetensors").stat().st_size
    assert adapter_bytes < (base_dir / "model.safetensors").stat().st_size / 2  # the adapter, not the model
    assert adapter_bytes < 300_000

    api = hub.api()
    kind = TASKS[head].lower().replace("_", "-")
    for folder, repo in ((base_dir, f"fixture-user/base-{kind}"), (adapter_dir, f"fixture-user/lora-{kind}")):
        api.create_repo(repo, exist_ok=True)
        api.upload_folder(repo_id=repo, folder_path=folder)
    batch = tokenizer(["honestly a great film.", "so dull"], padding=True)
    with torch.no_grad():
        expected = peft_model(**{k: torch.tensor(v) for k, v in batch.items()}).logits
    auto = "AutoModelForCausalLM" if head is ScratchformerForCausalLM else "AutoModelForSequenceClassification"
    got = run_child(hub, """
        import torch, transformers
        from peft import PeftModel
        spec = json.loads(os.environ["HUB_TEST_SPEC"])
        base = getattr(transformers, spec["auto"]).from_pretrained(spec["base"], trust_remote_code=True)
        model = PeftModel.from_pretrained(base, spec["adapter"]).eval()
        with torch.no_grad():
            logits = model(**{k: torch.tensor(v) for k, v in spec["batch"].items()}).logits
        emit(logits=logits.tolist(), module=type(base).__module__)
    """, tmp_path / "hf_home_child", tmp_path / "cwd", auto=auto, base=f"fixture-user/base-{kind}",
                    adapter=f"fixture-user/lora-{kind}", batch=dict(batch))
    assert got["module"].startswith("transformers_modules")
    torch.testing.assert_close(torch.tensor(got["logits"]), expected, atol=1e-5, rtol=1e-4)
