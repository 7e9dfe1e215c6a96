"""The Likeness evaluation engine: pure Python over numpy/torch, no Django.

- ``adapters``: load a model from a source (timm, sentence-transformers, ...) and embed inputs.
- ``extraction``: batched, chunked, resumable embedding extraction streamed to disk.
- ``fingerprint``: content hashes that key cached embeddings.
- ``metrics``: probes and scores (k-NN, ...) with their uncertainty.

Workers call it through ``evaluation.services``; tests call it directly.
"""
