"""Cluster-mode plumbing shared by the operator, the worker and the cluster facade:
custom-resource access with resourceVersion-guarded writes, the queue order and
claim protocol, Events, S3 settings and the webhook registry."""
