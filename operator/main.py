"""Entry point of the kopf operator: ``kopf run -m whisperop.operator.main``.

Started as a module (never by file path) so the folder ``operator/`` is only
ever imported as ``whisperop.operator``. This module configures kopf once at
start-up; the handlers live in modules of their own, one per concern, and
are imported here so kopf registers them.

Configuration choices (and why):

* progress and diff-base storage in annotations under ``whisperop.io/`` — a
  restarted operator resumes where the previous one stopped, with no state
  in process memory;
* every setting comes from :func:`whisperop.operator.config.config` (one
  pydantic-settings object; docs/configuration.md lists every knob);
* peering via ``kopf.zalando.org`` KopfPeering objects is off by default and
  enabled by the chart for single-active-replica deployments
  (``WHISPEROP_PEERING=<name>``);
* Kubernetes Events: the operator posts one Event per transition it makes
  itself (jobs.py, models.py, webhooks.py), the worker per transition it
  makes; kopf's own log-to-Event posting is limited to warnings so handler
  chatter does not multiply API writes;
* ``/metrics`` (prometheus_client) on ``WHISPEROP_METRICS_BIND`` (``0.0.0.0``) port
  ``WHISPEROP_METRICS_PORT`` (9090; 0 = off).

Handlers: jobs.py (TranscriptionJob lifecycle), models.py (WhisperModel →
Deployment, state, lost workers), scaling.py (replica policy and the demand
annotation), webhooks.py, gc.py (TTL and the S3 clean-up finalizer).
"""

from __future__ import annotations

import getpass
import logging
import os
from typing import Any

import kopf

from whisperop.core.logs import setup_logging

from .config import config

ANNOTATION_PREFIX = "whisperop.io"


def ensure_user_name() -> str:
    """Give the process a user name even when its uid has no /etc/passwd entry.

    kopf builds its peering identity from ``getpass.getuser()`` before any
    handler runs, and that raises ``KeyError: 'getpwuid(): uid not found'``
    (``OSError`` from Python 3.13) for a uid without an entry: the operator
    crash-looped as uid 65532 in a Debian image, and OpenShift assigns an
    arbitrary uid to every pod. getuser() reads ``LOGNAME``/``USER`` first, so
    setting ``USER`` (to ``uid-<n>``) when the lookup fails is enough; the
    images also set ``USER``/``LOGNAME`` and create the 65532 entry. Called at
    import, which ``kopf run -m`` does before it asks for the identity.
    """
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        name = f"uid-{os.getuid()}"
        os.environ["USER"] = name
        return name


def use_structured_logs() -> str:
    """Every line of the operator's output in one format: ``LOG_FORMAT=json`` (one JSON object per
    line, as the cluster's log pipelines expect) or ``text`` (the default: ``level logger: message
    key=value…``). Returns the format used.

    ``kopf run`` installs its own handler on the root logger before it imports this module, and
    kopf's formatters print the message only: the fields of the operator's structured lines (the
    figures behind a scaling decision, a webhook's redacted URL and error) were dropped. Replacing
    the root handlers with ours gives kopf's records, the handlers' and the kubernetes client's the
    same format, fields included (kopf's object reference becomes ``object``). kopf's Event posting
    is a handler of its own logger and is kept; kopf's ``--log-format`` no longer applies.
    """
    log = config().log
    fmt = "json" if log.format.lower() == "json" else "text"
    setup_logging(log.level, fmt)  # json: a fatal exit (e.g. no credentials) becomes a JSON line too
    return fmt


@kopf.on.startup()
def configure(settings: kopf.OperatorSettings, **_: Any) -> None:
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=ANNOTATION_PREFIX)
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(prefix=ANNOTATION_PREFIX, key="last-handled-configuration")
    settings.posting.level = logging.WARNING
    cfg = config()
    settings.execution.max_workers = cfg.threads
    settings.watching.server_timeout = cfg.watch_timeout_secs
    settings.watching.client_timeout = settings.watching.server_timeout + 30
    # no cluster-wide scanning of CRDs/namespaces: the namespaced Role in config/rbac
    # is then enough (CRDs must exist before the operator starts; exact --namespace names)
    settings.scanning.disabled = not cfg.kopf_scanning
    settings.peering.standalone = not cfg.peering
    if cfg.peering:
        settings.peering.name = cfg.peering
    metrics.serve(cfg.metrics_port, cfg.metrics_bind)


ensure_user_name()
use_structured_logs()

from . import gc, informers, jobs, metrics, models, scaling, webhooks  # noqa: E402,F401  (registers the handlers)
