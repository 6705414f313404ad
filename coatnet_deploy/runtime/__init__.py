"""Torch-free runtime for device apps (being written)."""
