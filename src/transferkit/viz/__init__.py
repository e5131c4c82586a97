"""Projections of embeddings to 2-D and their plots."""
