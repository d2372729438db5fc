"""Machinery of the `local` backend: the tiny model, batched sampling and the training worker.

The caller's process only uses `rftflow.local.runner`; every other module here runs in the worker child.
"""
