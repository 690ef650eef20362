"""Registry adapters: the OCI distribution API (httpx) and AWS ECR (boto3).

Nothing outside this package imports httpx-for-registries or boto3; callers use
:class:`image_updater.registry.base.Registry` and the errors in ``image_updater.errors``.
"""
