"""The command line: `rftflow` (main.py) and its subcommands, the demo, and the demo's Airflow home."""
