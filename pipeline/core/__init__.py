"""Shared core: config, io, errors, seeding."""
