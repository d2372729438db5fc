"""Machinery of the `local` backend: the tiny model, batched sampling and the training worker.

The caller's process only uses `rftflow.local.runner` and `rftflow.local.lease` (and the triggerer
`rftflow.local.trigger`); every other module here runs in the worker child.
"""
