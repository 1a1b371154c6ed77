"""API-server writes per TranscriptionJob, for a job of ~10 chunks.

    python bench/operator_writes.py [--chunks 10]

The operator and a real ``whisperop worker`` (tiny model, CHUNK_MAX_SECS set
so jfk.wav × 20 is cut into ~10 chunks) run one job with a webhook to a local
receiver; the job is then deleted. A watch on the job counts every write to
the object (each write is one ADDED/MODIFIED/DELETED event) and classifies it:
``progress`` (only progress/chunk/heartbeat changed), ``heartbeat`` (only
heartbeatTime), ``lifecycle`` (everything else). Events posted about the job
are counted too. Progress writes are rate-limited to ≤ 2/s by the worker.
"""

from __future__ import annotations

import argparse
import json
import threading
import time
import wave
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from operator_common import REPO, Bench, wait_for

PROGRESS_KEYS = {"progress", "chunk", "chunksTotal", "heartbeatTime"}


def diff_keys(a: dict, b: dict) -> tuple[set[str], set[str]]:
    """(changed metadata keys, changed status keys)."""
    ma, mb = a.get("metadata", {}), b.get("metadata", {})
    meta = {k for k in set(ma) | set(mb) if k not in ("resourceVersion", "managedFields") and ma.get(k) != mb.get(k)}
    sa, sb = a.get("status") or {}, b.get("status") or {}
    st = {k for k in set(sa) | set(sb) if sa.get(k) != sb.get(k)}
    if a.get("spec") != b.get("spec"):
        meta.add("spec")
    return meta, st


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeat", type=int, default=20, help="jfk.wav repetitions (~11 s each)")
    ap.add_argument("--chunk-secs", type=float, default=22.0)
    ap.add_argument("--json-out", default=None)
    args = ap.parse_args()

    from kubernetes import client, watch

    from whisperop.cluster import kube
    from whisperop.modelstore.tiny import build_tiny_model

    b = Bench()
    try:
        ns = b.namespace()
        tmp = b.tmp
        model = build_tiny_model(tmp / "ggml-tiny.bin")
        src = REPO.parent / "shared" / "data" / "audio" / "jfk.wav"
        long = tmp / "long.wav"
        with wave.open(str(src)) as r:
            params, frames = r.getparams(), r.readframes(r.getnframes())
        with wave.open(str(long), "wb") as w:
            w.setparams(params)
            for _ in range(args.repeat):
                w.writeframes(frames)
        b.s3.client().upload_file(str(long), b.s3.bucket, "bench/long.wav")

        hooks: list[dict] = []

        class H(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802
                hooks.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *a: object) -> None:
                pass

        srv = ThreadingHTTPServer(("127.0.0.1", 0), H)
        threading.Thread(target=srv.serve_forever, daemon=True).start()

        op = b.start_operator(ns, "writes-operator")
        b.create_model(ns, "default", modelURI=str(model), idleTimeoutSeconds=600)
        res = kube.jobs(b.api, ns)

        writes: list[tuple[str, set[str], set[str]]] = []
        stop = threading.Event()

        def watcher() -> None:
            prev: dict | None = None
            w = watch.Watch()
            for ev in w.stream(client.CustomObjectsApi(b.api).list_namespaced_custom_object, "whisperop.io", "v1alpha1",
                               ns, "transcriptionjobs", timeout_seconds=600):
                obj = ev["object"]
                if ev["type"] == "ADDED":
                    writes.append(("create", set(), set()))
                elif ev["type"] == "DELETED":
                    writes.append(("delete-final", set(), set()))
                    stop.set()
                    w.stop()
                    return
                else:
                    meta, st = diff_keys(prev or {}, obj)
                    writes.append(("modify", meta, st))
                prev = obj

        t = threading.Thread(target=watcher, daemon=True)
        t.start()
        time.sleep(1)
        res.create({"apiVersion": "whisperop.io/v1alpha1", "kind": "TranscriptionJob", "metadata": {"name": "w"},
                    "spec": {"audio": f"s3://{b.s3.bucket}/bench/long.wav", "outputFormats": ["json", "srt"],
                             "webhookUrl": f"http://127.0.0.1:{srv.server_address[1]}/"}})
        pod = wait_for(lambda: (b.running_pods(ns) or [None])[0], 60, "pod")
        import subprocess
        import sys

        f = open(tmp / "writes-worker.log", "ab")
        wk = subprocess.Popen([sys.executable, "-m", "whisperop", "worker", "--port", "0"], stdout=f,
                              stderr=subprocess.STDOUT,
                              env=b.proc_env(POD_NAME=pod, POD_NAMESPACE=ns, WHISPEROP_MODEL_NAME="default",
                                             USE_GPU="false", WHISPER_THREADS="1", CHUNK_MAX_SECS=str(args.chunk_secs),
                                             CHUNK_MIN_SECS="5", WHISPEROP_HEARTBEAT_SECS="10"))
        b.procs.append(wk)
        t0 = time.time()
        done = wait_for(lambda: (o := res.get("w")).get("status", {}).get("phase") in ("Done", "Failed") and o, 900, "done")
        run_s = time.time() - t0
        wait_for(lambda: (res.get("w").get("status") or {}).get("webhook"), 30, "webhook record")
        time.sleep(1)
        res.delete("w")
        stop.wait(60)
        evs = [e for e in client.CoreV1Api(b.api).list_namespaced_event(ns).items if e.involved_object.name == "w"]

        kinds = {"create": 0, "lifecycle": 0, "progress": 0, "heartbeat": 0, "delete": 0}
        detail = []
        for kind, meta, st in writes:
            if kind == "create":
                kinds["create"] += 1
                detail.append("create")
            elif kind == "delete-final":
                kinds["delete"] += 1
                detail.append("delete(final)")
            elif "deletionTimestamp" in meta:
                kinds["delete"] += 1
                detail.append("delete(mark)")
            elif not meta and st and st <= {"heartbeatTime"}:
                kinds["heartbeat"] += 1
                detail.append("heartbeat")
            elif not meta and st and st <= PROGRESS_KEYS and "progress" in st or (st <= PROGRESS_KEYS and "chunk" in st and not meta):
                kinds["progress"] += 1
                detail.append("progress")
            else:
                kinds["lifecycle"] += 1
                detail.append("+".join(sorted(meta)) + ("|" if meta and st else "") + "+".join(sorted(st - {"conditions"})))
        st = done["status"]
        out = {
            "phase": st["phase"], "chunks": st.get("chunksTotal"), "audio_s": st.get("durationSecs"), "run_s": round(run_s, 1),
            "writes_total": len(writes), **{f"writes_{k}": v for k, v in kinds.items()},
            "writes_excluding_progress_and_heartbeat": len(writes) - kinds["progress"] - kinds["heartbeat"],
            "events_about_job": len(evs), "event_reasons": sorted(e.reason for e in evs),
            "webhooks_received": len(hooks), "sequence": detail,
        }
        print(json.dumps(out, indent=1))
        if args.json_out:
            Path(args.json_out).write_text(json.dumps(out, indent=1))
        b.stop(wk)
        b.stop(op)
    finally:
        b.close()


if __name__ == "__main__":
    main()
