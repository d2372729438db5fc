"""The Airflow side: the operators every stage runs under, their deferral and callbacks, and the triggers."""
