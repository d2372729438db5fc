"""Machinery of the `local` backend: the tiny model, batched sampling and the training worker.

The caller's process only uses `rftflow.backends.local.runner` and `rftflow.backends.local.lease` (and the triggerer
`rftflow.orchestration.local_trigger`); every other module here runs in the worker child.
"""
