"""Datasets in the exact on-disk formats of the real ones, made offline."""
