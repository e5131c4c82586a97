"""Inference of frozen feature extractors: backend/precision policy, fidelity check, conversion cache, backends."""
