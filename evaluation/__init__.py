"""Catalogue (models, datasets, stimuli), runs, embeddings and scores."""
