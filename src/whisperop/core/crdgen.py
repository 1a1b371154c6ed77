"""Generate the CRDs in ``crds/`` from the pydantic API types of :mod:`whisperop.core.crds`.

``python -m whisperop.core.crdgen [--out crds] [--check]`` writes (or, with
``--check``, compares) ``transcriptionjobs.whisperop.io.yaml`` and
``whispermodels.whisperop.io.yaml``. The pydantic JSON schema is turned into
a *structural* OpenAPI v3 schema: ``$ref``s inlined, ``Optional`` unions
collapsed (absent = null; the system never writes nulls into objects), enums,
bounds, patterns, defaults and CEL rules with their messages kept, titles
dropped. A test asserts the committed files equal this output.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import yaml  # type: ignore[import-untyped]

from whisperop.core import crds

KEEP = {
    "type", "description", "enum", "default", "minimum", "maximum", "minLength", "maxLength", "pattern",
    "format", "items", "properties", "required", "additionalProperties", "maxItems", "minItems",
    "x-kubernetes-validations", "x-kubernetes-list-type", "x-kubernetes-list-map-keys",
    "x-kubernetes-preserve-unknown-fields",
}
OPTIONAL = "x-whisperop-optional"  # internal marker, removed before output


def _convert(node: dict[str, Any], defs: dict[str, Any]) -> dict[str, Any]:
    if "$ref" in node:
        target = defs[node["$ref"].rsplit("/", 1)[-1]]
        merged = {**target, **{k: v for k, v in node.items() if k != "$ref"}}
        return _convert(merged, defs)
    if "anyOf" in node:
        options = [o for o in node["anyOf"] if o.get("type") != "null"]
        if len(options) != 1:
            raise ValueError(f"unsupported union in CRD schema: {node}")
        merged = {**{k: v for k, v in node.items() if k != "anyOf"}, **_convert(options[0], defs)}
        for k in ("description", "default"):
            if k in node:
                merged[k] = node[k]
        if merged.get("default", 0) is None:
            merged.pop("default")
        out = _convert_plain(merged, defs)
        if out.get("type") == "object" and node.get("default", 0) is None:
            out[OPTIONAL] = True  # absent means "not set" (e.g. spec.source): no structural default
        return out
    if "allOf" in node and len(node["allOf"]) == 1:
        merged = {**{k: v for k, v in node.items() if k != "allOf"}, **_convert(node["allOf"][0], defs)}
        if "description" in node:
            merged["description"] = node["description"]
        return _convert_plain(merged, defs)
    return _convert_plain(node, defs)


def _convert_plain(node: dict[str, Any], defs: dict[str, Any]) -> dict[str, Any]:
    if "const" in node:
        node = {**node, "enum": [node["const"]]}
        node.pop("const")
    out: dict[str, Any] = {}
    for key, value in node.items():
        if key not in KEEP and key != OPTIONAL:
            continue
        if key == "properties":
            out[key] = {name: _convert(sub, defs) for name, sub in value.items()}
        elif key == "items":
            out[key] = _convert(value, defs)
        elif key == "additionalProperties":
            out[key] = _convert(value, defs) if isinstance(value, dict) else value
        elif key == "format" and value not in ("date-time", "int64", "int32", "double"):
            continue
        else:
            out[key] = value
    if "enum" in out and "type" not in out:
        out["type"] = "string"
    if out.get("type") == "object" and "properties" in out and "required" in out:
        out["required"] = [r for r in out["required"] if r in out["properties"]]
    if "default" in out and out["default"] is None:
        out.pop("default")
    if out.get("type") == "array" and out.get("default") == []:
        out.pop("default")
    if out.get("type") == "object" and out.get("default") == {}:
        out.pop("default")
    return out


def _fix_objects_defaults(schema: dict[str, Any]) -> None:
    """Nested object defaults from pydantic (e.g. resources) are given per field instead;
    an empty object default lets the API server apply them (structural defaulting).
    Optional objects (``X | None = None``) get none: their presence is meaningful
    (``has(self.source)`` in a CEL rule)."""
    for sub in schema.get("properties", {}).values():
        if sub.get(OPTIONAL):
            _fix_objects_defaults(sub)
        elif sub.get("type") == "object" and "properties" in sub:
            _fix_objects_defaults(sub)
            sub.setdefault("default", {})
            if sub["default"] != {}:
                sub["default"] = {}
        elif sub.get("type") == "array" and isinstance(sub.get("items"), dict):
            _fix_objects_defaults(sub["items"])


def schema_of(model: type[Any]) -> dict[str, Any]:
    raw = model.model_json_schema(by_alias=True, mode="validation")
    defs = raw.get("$defs", {})
    return _convert(raw, defs)


def _strip_markers(node: Any) -> None:
    if isinstance(node, dict):
        node.pop(OPTIONAL, None)
        for v in node.values():
            _strip_markers(v)
    elif isinstance(node, list):
        for v in node:
            _strip_markers(v)


def _conditions_list(s: dict[str, Any]) -> None:
    conds = s["properties"]["conditions"]
    conds["x-kubernetes-list-type"] = "map"
    conds["x-kubernetes-list-map-keys"] = ["type"]


def _crd(kind: str, plural: str, singular: str, short: str, spec_model: type[Any], status_model: type[Any],
         columns: list[dict[str, Any]], description: str, selectable: list[str]) -> dict[str, Any]:
    spec = schema_of(spec_model)
    spec["description"] = f"desired state of the {kind}"
    status = schema_of(status_model)
    status["description"] = f"observed state of the {kind} (written by the operator and the workers)"
    _conditions_list(status)
    if "outputFormats" in spec["properties"]:
        spec["properties"]["outputFormats"]["default"] = ["json"]
        spec["properties"]["outputFormats"]["x-kubernetes-list-type"] = "set"
    _fix_objects_defaults(spec)
    for name in ("resources", "nodeSelector", "env"):
        if name in spec["properties"]:
            spec["properties"][name]["default"] = {}
    _strip_markers(spec)
    _strip_markers(status)
    root = {
        "type": "object",
        "description": description,
        "required": ["spec"],
        "properties": {
            "apiVersion": {"type": "string"},
            "kind": {"type": "string"},
            "metadata": {"type": "object"},
            "spec": spec,
            "status": status,
        },
    }
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": f"{plural}.{crds.GROUP}", "labels": {"app.kubernetes.io/part-of": "whisper-operator"}},
        "spec": {
            "group": crds.GROUP,
            "scope": "Namespaced",
            "names": {"kind": kind, "listKind": f"{kind}List", "plural": plural, "singular": singular,
                      "shortNames": [short], "categories": ["whisperop"]},
            "versions": [{
                "name": crds.VERSION,
                "served": True,
                "storage": True,
                "subresources": {"status": {}},
                "additionalPrinterColumns": columns,
                "selectableFields": [{"jsonPath": p} for p in selectable],
                "schema": {"openAPIV3Schema": root},
            }],
        },
    }


def job_crd() -> dict[str, Any]:
    return _crd(
        crds.JOB_KIND, crds.JOB_PLURAL, crds.JOB_SINGULAR, crds.JOB_SHORT,
        crds.TranscriptionJobSpec, crds.TranscriptionJobStatus,
        [
            {"name": "Phase", "type": "string", "jsonPath": ".status.phase"},
            {"name": "Progress", "type": "integer", "jsonPath": ".status.progress"},
            {"name": "Model", "type": "string", "jsonPath": ".spec.model"},
            {"name": "Language", "type": "string", "jsonPath": ".status.language"},
            {"name": "Duration", "type": "number", "jsonPath": ".status.durationSecs", "description": "audio seconds"},
            {"name": "Worker", "type": "string", "jsonPath": ".status.worker", "priority": 1},
            {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
        ],
        "A transcription of one audio file by a WhisperModel.",
        [".spec.model"],
    )


def model_crd() -> dict[str, Any]:
    return _crd(
        crds.MODEL_KIND, crds.MODEL_PLURAL, crds.MODEL_SINGULAR, crds.MODEL_SHORT,
        crds.WhisperModelSpec, crds.WhisperModelStatus,
        [
            {"name": "State", "type": "string", "jsonPath": ".status.state"},
            {"name": "Ready", "type": "integer", "jsonPath": ".status.readyReplicas"},
            {"name": "Queue", "type": "integer", "jsonPath": ".status.queueDepth"},
            {"name": "Min", "type": "integer", "jsonPath": ".spec.minReplicas"},
            {"name": "Max", "type": "integer", "jsonPath": ".spec.maxReplicas"},
            {"name": "Model", "type": "string", "jsonPath": ".spec.modelURI", "priority": 1},
            {"name": "Claim", "type": "string", "jsonPath": ".spec.source.pvc.claimName", "priority": 1},
            {"name": "GPU", "type": "string", "jsonPath": ".status.gpu.name", "priority": 1},
            {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
        ],
        "A whisper model served by a Deployment of inference pods that scales with the queue (to zero when idle).",
        [],
    )


HEADER = "# Generated by `python -m whisperop.core.crdgen` from whisperop.core.crds. Do not edit.\n"


def render(crd: dict[str, Any]) -> str:
    return HEADER + yaml.safe_dump(crd, sort_keys=False, width=120)


def outputs() -> dict[str, str]:
    return {
        f"{crds.JOB_PLURAL}.{crds.GROUP}.yaml": render(job_crd()),
        f"{crds.MODEL_PLURAL}.{crds.GROUP}.yaml": render(model_crd()),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m whisperop.core.crdgen")
    parser.add_argument("--out", default=str(Path(__file__).resolve().parents[3] / "crds"))
    parser.add_argument("--check", action="store_true", help="exit 1 if the files differ from the generator output")
    args = parser.parse_args(argv)
    out = Path(args.out)
    stale = []
    for name, text in outputs().items():
        path = out / name
        if args.check:
            if not path.is_file() or path.read_text() != text:
                stale.append(name)
        else:
            out.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
            print(path)
    if stale:
        print("stale CRDs (run python -m whisperop.core.crdgen): " + ", ".join(stale), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
