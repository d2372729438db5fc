"""rftflow: Airflow pipelines for iterative SFT -> RFT -> eval cycles with a promotion gate."""

__version__ = "0.1.0"
