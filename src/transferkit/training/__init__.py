"""Training: config, the trainer, cached features, checkpoints, evaluation, runs."""
