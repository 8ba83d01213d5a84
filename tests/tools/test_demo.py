"""The demo page (python -m demo): its handlers, then the page itself driven in headless Chromium."""

import os
import shutil
import socket
import subprocess
import sys
import time

import pytest
import torch
from conftest import REPO_ROOT, free_port, sentiment_corpus, tiny_config, train_briefly

from scratchformer import (
    ScratchformerForCausalLM,
    ScratchformerForConditionalGeneration,
    ScratchformerForSequenceClassification,
)

gradio = pytest.importorskip("gradio", reason="the demo extra is not installed: pip install -e '.[demo]'")
from demo import app  # noqa: E402  (needs gradio's PIL)

pytestmark = pytest.mark.slow  # whole recipe runs, servers or browsers: skipped by -m "not slow"


CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.fixture(scope="module")
def folders(tmp_path_factory, tokenizer):
    """A classifier, a causal LM and an encoder-decoder, trained for seconds and saved as the recipes save them."""
    root = tmp_path_factory.mktemp("demo-models")
    texts, labels = sentiment_corpus(32)
    tokenizer.model_max_length = 64
    vocab = dict(vocab_size=len(tokenizer), pad_token_id=tokenizer.pad_token_id, bos_token_id=tokenizer.bos_token_id,
                 eos_token_id=tokenizer.eos_token_id)
    torch.manual_seed(0)
    classifier = ScratchformerForSequenceClassification(
        tiny_config(**vocab, num_labels=2, id2label={0: "NEGATIVE", 1: "POSITIVE"}, label2id={"NEGATIVE": 0, "POSITIVE": 1})
    )
    # A window of 256 positions: the browser test asks for 250 new tokens, long enough to watch them stream in.
    lm = ScratchformerForCausalLM(tiny_config(**vocab, position_embedding_type="rotary", max_position_embeddings=256))
    seq2seq = ScratchformerForConditionalGeneration(
        tiny_config(**vocab, is_encoder_decoder=True, decoder_start_token_id=tokenizer.bos_token_id, encoder_layers=1,
                    decoder_layers=1)
    )
    head_tail = ScratchformerForSequenceClassification(tiny_config(**vocab, num_labels=2, classifier_head_tokens=16))
    models = {
        "head-tail classifier": head_tail.eval(),
        "classifier": train_briefly(classifier, tokenizer, texts, labels),
        "lm": never_stops_early(train_briefly(lm, tokenizer, texts)),
        "translator": seq2seq.eval(),
    }
    for name, model in models.items():
        model.save_pretrained(root / name)
        tokenizer.model_max_length = model.config.max_position_embeddings
        tokenizer.save_pretrained(root / name)
    tokenizer.model_max_length = 64
    return {name: str(root / name) for name in models}


def never_stops_early(lm):
    """The LM without an end-of-sequence token to stop at: trained on short reviews, it may end after two tokens,
    too fast for the browser test to see any text stream in, so it writes every token it is asked for."""
    lm.generation_config.eos_token_id = None
    return lm


# -------------------------------------------------------------------------------------------------------------
# The handlers
# -------------------------------------------------------------------------------------------------------------


def test_a_folder_that_is_not_a_scratchformer_model_is_refused_clearly(tmp_path):
    from transformers import GPT2Config

    GPT2Config(n_layer=1).save_pretrained(tmp_path / "gpt2")
    with pytest.raises(app.DemoInputError, match="not a scratchformer model"):
        app.load(str(tmp_path / "gpt2"))
    with pytest.raises(app.DemoInputError, match="not a model folder"):
        app.load(str(tmp_path / "nothing-here"))


def test_classify_gives_label_scores_heat_map_and_says_how_it_truncated(folders):
    loaded = app.load(folders["classifier"])
    scores, image, note = loaded and app.classify(loaded, "honestly a great film.", 2, "mean")
    assert set(scores) == {"NEGATIVE", "POSITIVE"} and abs(sum(scores.values()) - 1) < 1e-5
    assert image.size[0] > 100 and note == ""
    _, _, note = app.classify(loaded, "a great film " * 40, 1, "0")
    assert "the first 64 were kept" in note and "tokens" in note
    head_tail = app.load(folders["head-tail classifier"])
    scores, image, note = app.classify(head_tail, "a great film " * 40, 1, "0")
    assert "the first 16 and the last 48 were kept" in note and image.size[0] > 100
    with pytest.raises(app.DemoInputError, match="review is empty"):
        app.classify(loaded, "   ", 1, "mean")


def test_a_classifier_of_a_users_data_shows_its_own_labels_and_says_text(tmp_path, tokenizer):
    labels = ["billing", "bug", "outage"]
    torch.manual_seed(0)
    model = ScratchformerForSequenceClassification(tiny_config(
        vocab_size=len(tokenizer), pad_token_id=tokenizer.pad_token_id, num_labels=3, id2label=dict(enumerate(labels)),
        label2id={name: i for i, name in enumerate(labels)}))
    folder = tmp_path / "tickets"
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    (folder / "metrics.json").write_text('{"dataset": "tickets.csv", "accuracy": 0.5}')
    loaded = app.load(str(folder))
    assert loaded.input_name == "text"
    scores, _, _ = app.classify(loaded, "the invoice is wrong", 2, "mean")
    assert set(scores) == set(labels)
    with pytest.raises(app.DemoInputError, match="The text is empty"):
        app.classify(loaded, " ", 1, "mean")
    page = app.build([loaded])
    boxes = [block for block in page.blocks.values() if getattr(block, "elem_id", None) == "classify-text"]
    assert [box.label for box in boxes] == ["Text"]
    shown = " ".join(str(getattr(block, "value", "")) for block in page.blocks.values())
    assert "labels: `billing`, `bug`, `outage`" in shown and "Review" not in shown
    # An IMDb folder (metrics.json says so, or an older one with the recipe's NEGATIVE/POSITIVE labels) says review.
    (folder / "metrics.json").write_text('{"dataset": "IMDb"}')
    assert app.load(str(folder)).input_name == "review"


def test_pooled_attention_reads_the_rows_the_pooled_vector_is_made_of():
    attentions = (torch.rand(1, 2, 4, 4).softmax(-1),)
    mask = torch.tensor([[1, 1, 1, 0]])
    torch.testing.assert_close(app.pooled_attention(attentions, mask, "mean")[0], attentions[0][0, :, :3].mean(1))
    torch.testing.assert_close(app.pooled_attention(attentions, mask, "last")[0], attentions[0][0, :, 2])
    torch.testing.assert_close(app.pooled_attention(attentions, mask, "cls")[0], attentions[0][0, :, 0])


def test_generation_streams_growing_text_and_beam_search_ends_with_the_same_as_generate(folders):
    loaded = app.load(folders["lm"])
    steps = [text for text, _ in app.generate_stream(loaded, "honestly a", "greedy", 12, 4, 1.0, 1.0)]
    assert len(steps) > 1 and all(steps[i].startswith(steps[i - 1]) for i in range(1, len(steps)))
    inputs = loaded.tokenizer("honestly a", return_tensors="pt")
    expected = loaded.model.generate(**inputs, max_new_tokens=12, do_sample=False)
    assert steps[-1] == loaded.tokenizer.decode(expected[0, inputs["input_ids"].shape[1]:], skip_special_tokens=True)
    (beam, _), = app.generate_stream(loaded, "honestly a", "beam", 6, 3, 1.0, 1.0)
    expected = loaded.model.generate(**inputs, max_new_tokens=6, num_beams=3, do_sample=False)
    assert beam == loaded.tokenizer.decode(expected[0, inputs["input_ids"].shape[1]:], skip_special_tokens=True)
    *_, (text, note) = app.generate_stream(loaded, "a great film " * 100, "greedy", 30, 2, 1.0, 1.0)
    assert "its last 255 were kept" in note and "Only 1 new tokens fit" in note
    with pytest.raises(app.DemoInputError, match="prompt is empty"):
        next(app.generate_stream(loaded, "", "greedy", 4, 2, 1.0, 1.0))


def test_translate_gives_text_and_alignment(folders):
    loaded = app.load(folders["translator"])
    text, image, note = app.translate(loaded, "four thousand and twenty-one")
    assert isinstance(text, str) and image.size[1] > 100 and note == ""


# -------------------------------------------------------------------------------------------------------------
# The page, in a real browser
# -------------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def page_url(folders):
    port = free_port()
    command = [sys.executable, "-m", "demo", folders["classifier"], folders["lm"], folders["translator"], "--port", str(port)]
    env = dict(os.environ, HF_HUB_OFFLINE="1", GRADIO_ANALYTICS_ENABLED="False", TOKENIZERS_PARALLELISM="false")
    server = subprocess.Popen(command, cwd=REPO_ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    url = None
    deadline = time.time() + 120
    while url is None:  # startup prints the URL
        line = server.stdout.readline()
        assert line or server.poll() is None, "the demo exited before printing its URL"
        assert time.time() < deadline, "the demo printed no URL in 120 s"
        if line.startswith("scratchformer demo: http://"):
            url = line.split(": ", 1)[1].strip()
    for _ in range(200):  # and then serves it
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            break
        except OSError:
            time.sleep(0.1)
    yield url
    server.terminate()
    server.wait(timeout=30)


@pytest.fixture(scope="module")
def browser():
    if CHROMIUM is None:
        pytest.skip("no Chromium on this machine (apt-get install -y chromium); .ci/run installs it")
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed (the test extra has it)")
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=CHROMIUM,
            args=["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync"],
        )
        yield browser
        browser.close()


@pytest.fixture
def page(browser, page_url):
    page = browser.new_page(viewport={"width": 1280, "height": 1400})
    page.goto(page_url)
    page.wait_for_selector("#classify-text textarea", timeout=60_000)
    yield page
    page.close()


SCREENSHOTS = os.environ.get("DEMO_SCREENSHOTS")  # a folder to keep the screenshots in, for a person to look at


def screenshot(page, tmp_path, name):
    page.screenshot(path=str(tmp_path / f"{name}.png"), full_page=True)
    if SCREENSHOTS:
        os.makedirs(SCREENSHOTS, exist_ok=True)
        shutil.copy(tmp_path / f"{name}.png", SCREENSHOTS)


def test_browser_classify_shows_label_and_heat_map(page, tmp_path):
    page.fill("#classify-text textarea", "honestly a great film. wonderful acting and a moving story.")
    page.click("#classify-button")
    page.wait_for_selector("#classify-heatmap img", timeout=60_000)
    label = page.inner_text("#classify-label")
    assert "POSITIVE" in label or "NEGATIVE" in label
    assert page.eval_on_selector("#classify-heatmap img", "img => img.naturalWidth") > 100
    screenshot(page, tmp_path, "classify")


def test_browser_empty_review_shows_the_error(page, tmp_path):
    page.click("#classify-button")
    page.wait_for_selector("#classify-note >> text=The review is empty", timeout=30_000)
    screenshot(page, tmp_path, "classify-empty")


def test_browser_generate_with_an_empty_prompt_shows_the_error(page, tmp_path):
    page.click("#tab-generate-button")
    page.click("#generate-button")
    page.wait_for_selector("#generate-note >> text=The prompt is empty", timeout=30_000)


def test_browser_generation_streams_in(page, tmp_path):
    page.click("#tab-generate-button")
    page.fill("#generate-prompt textarea", "honestly a")
    page.fill("#generate-max-new input[type=number]", "250")
    page.press("#generate-max-new input[type=number]", "Enter")
    # Record every value the output box takes while it fills: streaming shows several growing texts.
    page.evaluate("""() => {
        window.seen = [];
        const poll = () => {
            const box = document.querySelector('#generate-output textarea');
            if (box && box.value && window.seen[window.seen.length - 1] !== box.value) window.seen.push(box.value);
            requestAnimationFrame(poll);
        };
        poll();
    }""")
    page.click("#generate-button")
    page.wait_for_function("() => window.seen.length > 0", timeout=60_000)
    page.wait_for_timeout(3000)
    seen = page.evaluate("() => window.seen")
    assert len(seen) > 1, seen
    assert all(later.startswith(earlier) for earlier, later in zip(seen, seen[1:])), seen
    screenshot(page, tmp_path, "generate")


def test_browser_translate_shows_output_and_alignment(page, tmp_path):
    page.click("#tab-translate-button")
    page.fill("#translate-source textarea", "four thousand and twenty-one")
    page.click("#translate-button")
    page.wait_for_selector("#translate-alignment img", timeout=60_000)
    screenshot(page, tmp_path, "translate")
