"""Dataset curation from embeddings: duplicates (and, later, leakage, label issues, outliers)."""
