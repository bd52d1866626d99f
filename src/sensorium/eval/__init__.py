"""Metrics and evaluation tasks: retrieval, zero-shot classification."""
