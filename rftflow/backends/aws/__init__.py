"""Amazon Nova on AWS: recipes, request builders and job plumbing behind the sagemaker and bedrock backends.

Every module imports boto3/botocore and the Airflow amazon provider lazily, so importing this package stays cheap.
"""
