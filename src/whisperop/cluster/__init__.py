"""Every Kubernetes API-server client of the project, shared by the operator, the worker and
the cluster facade: custom-resource access with resourceVersion-guarded writes (kube), the
one list+watch cache (watch: ``ResourceWatch``), the facade's JobQueue (job_queue) and
ModelRuntime (model_runtime), the worker's WorkQueue (work_queue) with its S3 checkpoints
(checkpoint) and its model fetch (model_fetch), S3 settings (s3) and the webhook registry
(webhooks)."""
