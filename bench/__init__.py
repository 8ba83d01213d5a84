"""Benchmarks and reference baselines for scratchformer, run from the repository root as python -m bench.<module>.

    harness.py               the one timer and paired protocol (ABBA pairs, noise floor, MFU, memory) all speed runs use
    models.py                the same-size models: ours next to GPT-2, BERT and BART (sizes, configs, builders)
    speed.py, speed_gpu.py   training and decoding speed against GPT-2 / BERT, on CPU and on one GPU
    translate.py             the encoder-decoder against BART: speed, and accuracy at equal training time
    lm_compiled_vs_eager.py  the LM's edge ratio alone (ours compiled / GPT-2 eager)
    serve_load.py            `transformers serve` under concurrent streaming clients, ours and GPT-2
    peak_memory.sh           a command's peak resident memory, sampled from /proc
    micro/                   micro-benchmarks: attention_cpu, output_layer_cpu, linear_cross_entropy, lm_tokenize
    accuracy/                accuracy studies: baseline, ngram_screen, lm_budget, lm_eval_data and lm_eval_tasks/
    RESULTS.md               the current figures and their targets, each with its command, date and machine
    LOG.md                   the dated lab log: every measurement, how it was taken, what was decided
"""
