"""Shared core, branch-free: params machinery, io, errors, seeding, the one training loop, shared optimizers, ranking metrics, pins."""
