"""The Ray side of the `ray` backend: the Jobs REST client and trigger (Airflow side, no `ray` import) and the
job entrypoint that runs on the cluster (rftflow.backends.ray.job)."""
