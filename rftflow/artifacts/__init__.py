"""Where results live: the store (file:// and s3://), stage manifests, and the champion registry."""
