"""Micro-benchmarks, one kernel or step each (attention, output layer, training loss, tokenizing), timed by harness."""
