"""Stages of the study pipelines (``studies/<name>/dvc.yaml``): heavier reproductions over the same library."""
