"""The cycle itself: its stage graph, run params, typed recipes, what each stage does, and the task bodies."""
