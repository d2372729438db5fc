"""What a person sees of a cycle: its summary, report, MLflow run, notifications, run note and terminal view."""
