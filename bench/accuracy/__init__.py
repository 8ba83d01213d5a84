"""Accuracy studies apart from speed: linear baselines, the n-gram screen, the LM vs GPT-2 per budget, lm_eval tasks."""
