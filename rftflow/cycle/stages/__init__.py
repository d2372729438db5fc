"""The cycle's stages, one module each, named after the stage (its DAG task):

validate_data · baseline_eval · diversity (diversity_check and diversity_recheck) · branches (plan_training,
plan_rft, choose_outcome) · training (sft and rft) · checkpoint_eval · gate · promote (and iterate) · stop · report

A stage function takes (params, StageContext, Inputs): the run's resolved params (rftflow.cycle.params), the folder
it writes, and its upstream stages' manifests by role (rftflow.cycle.graph). It reuses its own complete manifest
when it finds one (retries and cleared tasks pay nothing twice) and returns a small dict for XCom. The Airflow side
is rftflow.cycle.tasks; the work a backend does is behind rftflow.backends.base.Backend.
"""
