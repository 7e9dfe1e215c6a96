"""Metrics over embeddings, each returning a value with its uncertainty."""
