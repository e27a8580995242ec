"""Datasets, domain tasks and loaders."""
