"""Embedding extraction: the extractor, the incremental plan, read -> encode -> write stages, the local runner."""
