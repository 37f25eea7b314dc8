"""Pieces shared by every stage: symbols, partitions, storage, HTTP pacing, plots, settings."""
