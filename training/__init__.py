"""Training utilities for scratchformer recipes (data loading lives in training.data)."""
