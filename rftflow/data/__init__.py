"""Datasets: records and their schema, validation with its report, conversion, and the sample data."""
