"""The `ray` backend: backend.py (the stages as Ray jobs), client.py (the Jobs REST API, no `ray` import), job.py
(the entrypoint that runs on the cluster) and local_head.py (a head on this machine for tests and the demo). Its
trigger is rftflow.orchestration.ray_trigger."""
