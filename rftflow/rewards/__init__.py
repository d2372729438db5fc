"""Reward functions: the contract, the handler loader, the sandboxed worker pool and scoring (runner.py)."""
