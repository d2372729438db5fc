"""Pure scoring every backend shares: evaluation, the diversity check, the gate and its paired statistics."""
