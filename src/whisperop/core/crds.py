"""API types of the cluster mode: TranscriptionJob and WhisperModel (whisperop.io/v1alpha1).

One place for the types, in the kubebuilder spirit: the pydantic models below
are the source of the CRD schemas (``python -m whisperop.core.crdgen`` writes
``crds/*.yaml`` from them). Field names are the Kubernetes camelCase names;
validation (enums, minimums, URI rules, defaults) is declared here once and
enforced by the API server through the generated schema.

Who reads resources through the models: every runtime component, at its
boundary with the API server. The one watch cache (:mod:`whisperop.cluster.watch`)
parses each object as it arrives (:class:`TranscriptionJob`, :class:`WhisperModel`;
the operator keeps the smaller :class:`JobSummary` of each job), and reads of
single objects are parsed where they are made (:func:`as_job`, :func:`as_model`:
a WhisperModel naming no usable model source raises the reason, not a
pydantic error); the code behind the boundary uses attributes, so every phase
(:class:`Phase`, :data:`TERMINAL_PHASES`), schema default and field name is
spelled here once. Status writes are built from the same names
(:meth:`_Base.dump`; :meth:`_Base.merge_patch` where fields must be cleared).
Writes of whole sub-objects the API server merges (conditions) use
:func:`set_condition`.

Also here: the names every component shares (group, plural, annotations,
labels, finalizer, condition types) and the conversion of a TranscriptionJob
into the contract's ``Job`` shape (used by webhooks and by the cluster
JobQueue of the facade).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from enum import Enum
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from whisperop.core import modelsource
from whisperop.core.models import DegradedChunk, Job, JobStatus, RemovedText, Segment, Task, Timestamp

GROUP = "whisperop.io"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"
JOB_KIND, JOB_PLURAL, JOB_SINGULAR, JOB_SHORT = "TranscriptionJob", "transcriptionjobs", "transcriptionjob", "tj"
MODEL_KIND, MODEL_PLURAL, MODEL_SINGULAR, MODEL_SHORT = "WhisperModel", "whispermodels", "whispermodel", "wm"

# metadata the system writes (never spec: nothing a user declares in Git is rewritten)
FINALIZER = "whisperop.io/cleanup"  # on jobs: delete the S3 objects the system created
LABEL_MODEL = "whisperop.io/model"  # on jobs (copy of spec.model) and on inference pods
LABEL_COMPONENT = "app.kubernetes.io/component"
ANN_DEMAND = "whisperop.io/demand"  # on WhisperModels: {"action": "load"|"unload", "at": RFC 3339} from the facade
ANN_LOAD_STATE = "whisperop.io/load-state"  # on inference pods: what the worker reports (loading/waiting_for_gpu/ready)
ANN_AUDIO_OWNED = "whisperop.io/audio-owned"  # on jobs: "true" when the system uploaded the audio (facade): GC deletes it
ANN_SUBMITTED = "whisperop.io/submitted-at"  # on jobs: RFC 3339 with microseconds, set by the facade (FIFO within a second)
ANN_FILENAME = "whisperop.io/filename"  # on jobs: the uploaded file's name (the facade)
ANN_DECODE_HINTS = "whisperop.io/decode-hints"  # on jobs: {"prompt", "temperature"} of an OpenAI-compatible request
ANN_OWNER = "whisperop.io/owner"  # on jobs: the submitting token's principal (never the token itself)
ANN_TEMPLATE_HASH = "whisperop.io/template-hash"  # on Deployments: hash of the WhisperModel spec rendered into the pod template
WEBHOOK_CONFIGMAP = "whisperop-webhooks"  # per namespace: registry of model lifecycle webhook URLs

DEFAULT_MODEL = "default"
# the chart's default inference image (values.yaml image.inference, tag = appVersion):
# a WhisperModel applied without spec.image runs what helm install deployed
DEFAULT_IMAGE = "ghcr.io/whisper-operator/whisperop-inference:0.1.0"

# s3://bucket/key (bucket per S3 naming rules) or http(s)://host/...
AUDIO_URI_RE = r"^(s3://[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]/.+|https?://[^/\s]+(/\S*)?)$"
# s3://bucket/key of a GGML file, or an absolute path on a volume
MODEL_URI_RE = modelsource.MODEL_URI_RE
HTTP_URL_RE = r"^https?://[^/\s]+(/\S*)?$"
DNS_LABEL_RE = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"


def _cel(rule: str, message: str) -> dict[str, Any]:
    return {"x-kubernetes-validations": [{"rule": rule, "message": message}]}


class Phase(str, Enum):
    Queued = "Queued"
    Running = "Running"
    Done = "Done"
    Failed = "Failed"
    Cancelled = "Cancelled"

    @property
    def terminal(self) -> bool:
        return self in (Phase.Done, Phase.Failed, Phase.Cancelled)

    def __str__(self) -> str:  # the value in labels, messages and logs, as for a plain string
        return self.value


TERMINAL_PHASES: frozenset[Phase] = frozenset(p for p in Phase if p.terminal)  # str enum: "Done" in it, too


# Schema defaults of WhisperModel.spec (the fields below are their only readers)
DEFAULT_MIN_REPLICAS = 0
DEFAULT_MAX_REPLICAS = 1
DEFAULT_IDLE_TIMEOUT_SECS = 300
DEFAULT_GPU_POLL_INTERVAL_SECS = 30
DEFAULT_GPUS = 1


class OutputFormat(str, Enum):
    json = "json"
    srt = "srt"
    vtt = "vtt"
    txt = "txt"


class ModelStateName(str, Enum):
    unloaded = "unloaded"
    loading = "loading"
    waiting_for_gpu = "waiting_for_gpu"
    ready = "ready"


class EngineName(str, Enum):
    """The decoding backend of a WhisperModel's workers (``ENGINE`` of the worker, docs/operator.md)."""

    whispercpp = "whispercpp"  # a GGML model file
    ctranslate2 = "ctranslate2"  # a CTranslate2 model directory (s3:// prefix, or a path in the image / on the PVC)


class _Base(BaseModel):
    model_config = ConfigDict(populate_by_name=True, extra="ignore", use_enum_values=True)

    def dump(self) -> dict[str, Any]:
        """The JSON-ready dict for the API server (None fields left out)."""
        return self.model_dump(mode="json", by_alias=True, exclude_none=True)

    def merge_patch(self) -> dict[str, Any]:
        """A JSON merge patch that makes the stored object this one: :meth:`dump` plus an explicit
        null for each top-level field that is None (a merge patch deletes those; left out, the
        stored value would stay, e.g. ``loadedAt`` of a model that went down)."""
        out = self.dump()
        for name, field in type(self).model_fields.items():
            out.setdefault(field.alias or name, None)
        return out


class _Resource(_Base):
    """What TranscriptionJob and WhisperModel share: metadata stays the API server's dict."""

    apiVersion: str = API_VERSION
    metadata: dict[str, Any] = Field(default_factory=dict)

    @property
    def name(self) -> str:
        return str(self.metadata.get("name") or "")

    @property
    def namespace(self) -> str:
        return str(self.metadata.get("namespace") or "")

    @property
    def resource_version(self) -> str:
        return str(self.metadata.get("resourceVersion") or "")

    @property
    def annotations(self) -> dict[str, str]:
        return dict(self.metadata.get("annotations") or {})

    @property
    def deleting(self) -> bool:
        return bool(self.metadata.get("deletionTimestamp"))


class Condition(_Base):
    """A condition as the Kubernetes API conventions define it."""

    type: str = Field(description="condition type, CamelCase (e.g. Accepted, Ready, GpuAvailable)", max_length=316)
    status: Literal["True", "False", "Unknown"]
    reason: str = Field(description="CamelCase machine-readable reason", max_length=1024)
    message: str = Field("", description="human-readable detail", max_length=32768)
    lastTransitionTime: Timestamp
    observedGeneration: int | None = Field(None, ge=0)


# ── TranscriptionJob ─────────────────────────────────────────────────────────


class TranscriptionJobSpec(_Base):
    audio: str = Field(
        description="the audio to transcribe: an s3://bucket/key URI or an http(s) URL",
        max_length=2048,
        json_schema_extra=_cel(f"self.matches(r'{AUDIO_URI_RE}')", "audio must be an s3://bucket/key URI or an http(s) URL"),
    )
    model: str = Field(DEFAULT_MODEL, description="name of a WhisperModel in the job's namespace", max_length=63, pattern=DNS_LABEL_RE)
    language: str | None = Field(None, description="ISO 639-1 code; omit to auto-detect", min_length=2, max_length=3, pattern=r"^[a-z]{2,3}$")
    task: Task = Field(Task.transcribe, description="transcribe, or translate into English")
    outputFormats: list[OutputFormat] = Field(
        default_factory=lambda: [OutputFormat.json],
        description="json is always written; srt, vtt and txt on request",
        max_length=4,
    )
    webhookUrl: str | None = Field(
        None,
        description="POSTed the full Job document when the job ends (also registered for model lifecycle webhooks)",
        max_length=2048,
        json_schema_extra=_cel(f"self.matches(r'{HTTP_URL_RE}')", "webhookUrl must be an http(s) URL"),
    )
    priority: int = Field(0, ge=0, le=1000000, description="higher runs first; equal priorities run oldest first")
    ttlSecondsAfterFinished: int | None = Field(None, ge=0, description="delete the job this long after it finished")
    cancel: bool = Field(False, description="true cancels the job (queued: at once; running: the worker aborts it)")
    timeLimitSeconds: int | None = Field(
        None, ge=1, le=7 * 86400,
        description="wall-time limit of one run of the job; over it the chunk in flight stops and the rest are reported failed "
                    "(default: the worker's JOB_TIME_LIMIT_SECS)",
    )
    chunkTimeLimitFactor: str | None = Field(
        None, max_length=16, pattern=r"^[0-9]+(\.[0-9]+)?$",
        description="per-chunk limit = CHUNK_TIME_LIMIT_MIN_SECS + this x max(chunk duration, 30 s), as a decimal string "
                    "(CRDs avoid floats); over it a chunk is retried once, then failed (default: CHUNK_TIME_LIMIT_FACTOR)",
    )


class JobResult(_Base):
    json_: str = Field(alias="json", description="s3:// URI of transcript.json")
    srt: str | None = None
    vtt: str | None = None
    txt: str | None = None
    segments: int = Field(0, ge=0, description="number of segments")


class WebhookDelivery(_Base):
    url: str
    state: Literal["pending", "delivered", "failed"]
    attempts: int = Field(0, ge=0)
    responseCode: int | None = None
    lastAttemptTime: datetime | None = None
    error: str | None = None


class TranscriptionJobStatus(_Base):
    phase: Phase | None = None
    progress: int = Field(0, ge=0, le=100)
    chunk: int | None = Field(None, ge=0)
    chunksTotal: int | None = Field(None, ge=0)
    language: str | None = None
    durationSecs: float | None = Field(None, ge=0)
    worker: str | None = Field(None, description="the inference pod running the job")
    heartbeatTime: datetime | None = None
    attempts: int = Field(0, ge=0, description="times the job was started")
    result: JobResult | None = None
    error: str | None = None
    startTime: datetime | None = None
    completionTime: datetime | None = None
    webhook: WebhookDelivery | None = None
    conditions: list[Condition] = Field(default_factory=list)
    observedGeneration: int | None = Field(None, ge=0)


class TranscriptionJob(_Resource):
    kind: str = JOB_KIND
    spec: TranscriptionJobSpec
    status: TranscriptionJobStatus = Field(default_factory=TranscriptionJobStatus)

    @property
    def phase(self) -> Phase:
        """The phase (a job the operator has not accepted yet has none: ``Queued``)."""
        return Phase(self.status.phase or Phase.Queued)

    @property
    def claimable(self) -> bool:
        """Queued, not cancelled, not being deleted: what a worker may claim."""
        return self.status.phase == Phase.Queued and not self.spec.cancel and not self.deleting


def as_job(obj: "TranscriptionJob | dict[str, Any]") -> TranscriptionJob:
    """A TranscriptionJob parsed from the API server's dict (or the typed one as it is)."""
    return obj if isinstance(obj, TranscriptionJob) else TranscriptionJob.model_validate(obj)


# ── WhisperModel ─────────────────────────────────────────────────────────────


class Toleration(_Base):
    key: str | None = None
    operator: Literal["Exists", "Equal"] | None = None
    value: str | None = None
    effect: Literal["NoSchedule", "PreferNoSchedule", "NoExecute"] | None = None
    tolerationSeconds: int | None = None


class ModelResources(_Base):
    gpus: int = Field(DEFAULT_GPUS, ge=0, le=16, description="nvidia.com/gpu per inference pod (0 = CPU only)")
    requests: dict[str, str] = Field(default_factory=dict, description="extra resource requests, e.g. cpu, memory")
    limits: dict[str, str] = Field(default_factory=dict, description="extra resource limits")


class PvcModelSource(_Base):
    """A GGML file on a PersistentVolumeClaim of the model's namespace, mounted read-only."""

    claimName: str = Field(description="name of the PersistentVolumeClaim", min_length=1, max_length=253,
                           pattern=modelsource.DNS_SUBDOMAIN_RE)
    path: str = Field(
        description="the GGML file inside the claim, relative to its root (e.g. ggml-large-v3-q5_0.bin)",
        min_length=1, max_length=1024, pattern=modelsource.PVC_PATH_RE,
        json_schema_extra=_cel("!self.split('/').exists(s, s == '.' || s == '..')",
                               "source.pvc.path must not contain '.' or '..' segments"),
    )


class ModelSourceSpec(_Base):
    """Model sources other than modelURI; exactly one kind is set (only pvc today)."""

    model_config = ConfigDict(json_schema_extra=_cel("has(self.pvc)", "source must name exactly one kind: pvc"))

    pvc: PvcModelSource | None = Field(None, description="a GGML file on a PersistentVolumeClaim (read-only mount)")


class WhisperModelSpec(_Base):
    """Exactly one model source: ``modelURI`` or ``source`` (a CEL rule, and :func:`_one_source`)."""

    model_config = ConfigDict(json_schema_extra=_cel(
        "has(self.modelURI) != has(self.source)",
        "set exactly one model source: modelURI (s3:// URI or absolute path) or source.pvc"))

    modelURI: str | None = Field(
        None,
        description="s3://bucket/key of a GGML model file (engine ctranslate2: s3://bucket/prefix of a CTranslate2 "
                    "directory), or an absolute path on a volume of the inference pod (exclusive with source)",
        max_length=2048,
        json_schema_extra=_cel(f"self.matches(r'{MODEL_URI_RE}')", "modelURI must be an s3://bucket/key URI or an absolute path"),
    )
    source: ModelSourceSpec | None = Field(None, description="where the model file is, other than modelURI (exclusive with it)")
    engine: EngineName | None = Field(
        None,
        description="the decoding backend: whispercpp (the source is a GGML file) or ctranslate2 (the source is a "
                    "CTranslate2 model directory: an s3://bucket/prefix/ whose objects are model.bin, config.json, "
                    "tokenizer.json, ..., or a directory path); absent = the worker's ENGINE (auto: by device class)",
    )
    displayName: str | None = Field(None, max_length=253)
    minReplicas: int = Field(DEFAULT_MIN_REPLICAS, ge=0, le=1000)
    maxReplicas: int = Field(DEFAULT_MAX_REPLICAS, ge=1, le=1000)
    idleTimeoutSeconds: int = Field(DEFAULT_IDLE_TIMEOUT_SECS, ge=0, description="scale to minReplicas after this long without work; 0 = never")
    gpuPollIntervalSeconds: int = Field(DEFAULT_GPU_POLL_INTERVAL_SECS, ge=1, description="retry interval of a load that failed for lack of GPU memory")
    resources: ModelResources = Field(default_factory=ModelResources)
    nodeSelector: dict[str, str] = Field(default_factory=dict)
    tolerations: list[Toleration] = Field(default_factory=list)
    runtimeClassName: str | None = Field(
        None, max_length=253, pattern=modelsource.DNS_SUBDOMAIN_RE,
        description="RuntimeClass of the inference pods (e.g. nvidia, where the NVIDIA runtime is not the default)")
    image: str = Field(DEFAULT_IMAGE, max_length=1024)
    serviceAccountName: str | None = Field(None, max_length=253, description="service account of the inference pods")
    env: dict[str, str] = Field(default_factory=dict, description="extra environment variables of the worker")

    @model_validator(mode="before")
    @classmethod
    def _one_source(cls, data: Any) -> Any:
        """Exactly one usable source, checked on the spec as given (before the fields' patterns),
        so that the error is the reason :func:`as_model` hands on."""
        if isinstance(data, dict):
            source = data.get("source")
            modelsource.check({**data, "source": source.dump()} if isinstance(source, _Base) else data)
        return data


class GpuReport(_Base):
    """The GPU of a ready inference pod, as its worker reports it (NVML, after loading the model)."""

    name: str | None = None
    vramTotalMB: int | None = Field(None, ge=0)
    vramUsedMB: int | None = Field(None, ge=0, description="in use once the model was loaded")


class WhisperModelStatus(_Base):
    state: ModelStateName = ModelStateName.unloaded
    replicas: int = Field(0, ge=0, description="replicas the operator asks for")
    readyReplicas: int = Field(0, ge=0)
    unschedulableReplicas: int = Field(0, ge=0)
    loadedAt: Timestamp | None = None
    vramNeededMB: int | None = None
    vramFreeMB: int | None = None
    retryInSecs: int | None = None
    gpu: GpuReport | None = Field(None, description="the GPU of the first ready replica (absent without one)")
    streams: int | None = Field(None, ge=0, description="decode streams loaded, summed over the ready replicas "
                                "(fewer than streamsWanted while GPU memory was short; added as it frees up)")
    streamsWanted: int | None = Field(None, ge=0, description="decode streams the ready replicas' settings ask for")
    lastActivityTime: Timestamp | None = None
    queueDepth: int = Field(0, ge=0)
    runningJobs: int = Field(0, ge=0)
    conditions: list[Condition] = Field(default_factory=list)
    observedGeneration: int | None = Field(None, ge=0)


class WhisperModel(_Resource):
    kind: str = MODEL_KIND
    spec: WhisperModelSpec
    status: WhisperModelStatus = Field(default_factory=WhisperModelStatus)


def as_model(obj: "WhisperModel | dict[str, Any]") -> WhisperModel:
    """A WhisperModel parsed from the API server's dict (or the typed one as it is). A spec without
    exactly one usable model source (stored under an older CRD, or by a server without CEL)
    raises :class:`~whisperop.core.modelsource.InvalidModelSource` with its reason, not
    pydantic's wrapper: the operator shows that reason in the ``Accepted`` condition."""
    if isinstance(obj, WhisperModel):
        return obj
    try:
        return WhisperModel.model_validate(obj)
    except ValidationError as exc:
        for err in exc.errors():
            cause = (err.get("ctx") or {}).get("error")
            if isinstance(cause, modelsource.InvalidModelSource):
                raise cause from None
        raise


def stored_model_status(obj: dict[str, Any]) -> WhisperModelStatus:
    """The status of a WhisperModel as the API server holds it, also when its spec does not parse
    (the operator keeps the conditions of a rejected model)."""
    return WhisperModelStatus.model_validate(obj.get("status") or {})


# ── helpers shared by operator, worker and facade ───────────────────────────


def parse_time(value: str | None) -> datetime | None:
    if not value:
        return None
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


def rfc3339(dt: datetime) -> str:
    from whisperop.core.models import format_timestamp

    return format_timestamp(dt)


def set_condition(conditions: "Sequence[dict[str, Any] | Condition]", type_: str, status: str, reason: str,
                  message: str, now: datetime, generation: int | None = None) -> list[dict[str, Any]]:
    """Return ``conditions`` (typed or as written) with ``type_`` set, ready to write;
    lastTransitionTime moves only when status changes."""
    given = [c.dump() if isinstance(c, Condition) else dict(c) for c in conditions]
    out = [c for c in given if c.get("type") != type_]
    old = next((c for c in given if c.get("type") == type_), None)
    ltt = old["lastTransitionTime"] if old and old.get("status") == status and old.get("lastTransitionTime") else rfc3339(now)
    cond: dict[str, Any] = {"type": type_, "status": status, "reason": reason, "message": message, "lastTransitionTime": ltt}
    if generation is not None:
        cond["observedGeneration"] = generation
    out.append(cond)
    return out


def split_s3_uri(uri: str) -> tuple[str, str]:
    if not uri.startswith("s3://"):
        raise ValueError(f"not an s3:// URI: {uri}")
    bucket, _, key = uri[5:].partition("/")
    if not bucket or not key:
        raise ValueError(f"s3 URI needs a bucket and a key: {uri}")
    return bucket, key


def results_prefix(namespace: str, name: str) -> str:
    """Where the worker writes a job's outputs (inside the results bucket)."""
    return f"results/{namespace}/{name}/"


PHASE_TO_STATUS: dict[str, JobStatus] = {
    Phase.Queued: JobStatus.queued, Phase.Running: JobStatus.running, Phase.Done: JobStatus.done,
    Phase.Failed: JobStatus.failed, Phase.Cancelled: JobStatus.cancelled,
}


def job_from_resource(obj: TranscriptionJob | dict[str, Any], segments: list[Segment] | None = None) -> Job:
    """The contract's Job shape of a TranscriptionJob (segments from the result JSON, if given)."""
    tj = as_job(obj)
    spec, status, phase = tj.spec, tj.status, tj.phase
    filename = tj.annotations.get(ANN_FILENAME) or spec.audio.rstrip("/").rsplit("/", 1)[-1] or None
    created = parse_time(tj.metadata.get("creationTimestamp"))
    fields: dict[str, Any] = {
        "id": tj.name,
        "status": PHASE_TO_STATUS[phase],
        "task": spec.task,
        "language": status.language or spec.language,
        "progress": 100 if phase == Phase.Done else status.progress,
        "duration_secs": status.durationSecs,
        "segments": segments or [],
        "error": status.error,
        "webhook_url": spec.webhookUrl,
        "filename": filename,
        "completed_at": status.completionTime,
        "time_limit_secs": spec.timeLimitSeconds,
        "chunk_time_limit_factor": float(spec.chunkTimeLimitFactor) if spec.chunkTimeLimitFactor else None,
    }
    if created:
        fields["created_at"] = created
    return Job(**fields)


@dataclass(frozen=True)
class ResultDoc:
    """A Done job's ``transcript.json``, parsed: what the Job shows of it."""

    segments: list[Segment]
    removed: list[RemovedText]
    degraded_chunks: list[DegradedChunk]

    @classmethod
    def parse(cls, body: dict[str, Any]) -> "ResultDoc":
        return cls([Segment.model_validate(s) for s in body.get("segments") or []],
                   [RemovedText.model_validate(r) for r in body.get("removed") or []],
                   [DegradedChunk.model_validate(d) for d in body.get("degraded_chunks") or []])


def job_with_result(obj: TranscriptionJob | dict[str, Any], result: ResultDoc | None, verbose: bool = False) -> Job:
    """The Job of a resource with its result: segments, the count of what repetition handling
    removed (the text itself only when ``verbose``), the degraded chunks. One shape for the
    facade and the operator's webhook."""
    if result is None:
        return job_from_resource(obj, [])
    job = job_from_resource(obj, list(result.segments))
    return job.model_copy(update={"segments_removed": len(result.removed), "degraded_chunks": list(result.degraded_chunks),
                                  "removed": list(result.removed) if verbose else None})


def submission_order(obj: TranscriptionJob | dict[str, Any]) -> str:
    """A sortable submission time of a job: the facade's microsecond
    ``whisperop.io/submitted-at`` when present, else ``creationTimestamp``
    (whole seconds) written with the same number of digits. Queue order and
    listings use it, so two jobs submitted within one second keep their order
    (creationTimestamp alone ties, and the name — a UUID — would decide)."""
    meta = (obj.metadata if isinstance(obj, TranscriptionJob) else obj.get("metadata")) or {}
    submitted = (meta.get("annotations") or {}).get(ANN_SUBMITTED)
    if submitted:
        return submitted
    created = meta.get("creationTimestamp") or ""
    return created[:-1] + ".000000Z" if created.endswith("Z") and "." not in created else created


@dataclass(frozen=True)
class JobSummary:
    """The operator's per-job cache item: the few fields its model reconcile, queue depth,
    lost-worker check and TTL sweep read (memory scales with this, not the object:
    docs/benchmarks-operator.md)."""

    name: str
    model: str
    phase: Phase | None  # None: not accepted yet
    created: datetime | None
    cancel: bool
    worker: str | None
    heartbeat: datetime | None
    start_time: datetime | None
    completion_time: datetime | None
    ttl: int | None
    deleting: bool

    @classmethod
    def of(cls, obj: TranscriptionJob | dict[str, Any]) -> "JobSummary":
        tj = as_job(obj)
        st = tj.status
        return cls(tj.name, tj.spec.model, Phase(st.phase) if st.phase else None,
                   parse_time(tj.metadata.get("creationTimestamp")), tj.spec.cancel, st.worker, st.heartbeatTime,
                   st.startTime, st.completionTime, tj.spec.ttlSecondsAfterFinished, tj.deleting)


def submitted_now() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


@dataclass(frozen=True)
class Demand:
    """The facade's ``whisperop.io/demand`` annotation on a WhisperModel (``POST /model/load|unload``)."""

    action: str  # load | unload
    at: datetime


def parse_demand(annotations: dict[str, str] | None) -> Demand | None:
    """The demand annotation of a WhisperModel (None when absent or malformed)."""
    raw = (annotations or {}).get(ANN_DEMAND)
    if not raw:
        return None
    try:
        d = json.loads(raw)
        at = parse_time(d.get("at"))
        if d.get("action") in ("load", "unload") and at is not None:
            return Demand(d["action"], at)
    except (ValueError, AttributeError, TypeError):
        pass
    return None


def demand_annotation(action: str, at: datetime | None = None) -> dict[str, Any]:
    """The merge patch the facade sends to record a demand (``at``: now when not given); the
    operator reads it back with :func:`parse_demand` and never edits it."""
    when = at or datetime.now(timezone.utc)
    return {"metadata": {"annotations": {ANN_DEMAND: json.dumps({"action": action, "at": rfc3339(when)})}}}
