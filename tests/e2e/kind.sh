#!/usr/bin/env bash
# End-to-end on a kind cluster, for machines with Docker and kind (CI here runs
# the same flow on a real node of its own instead: tests/e2e/test_real_node.py,
# docs/testing.md). Same images, same chart values as that suite:
#   1. both images built from the committed Dockerfiles (the CPU inference
#      variant, GGML_CUDA=0) with the default public base images and loaded
#      into kind under the names the chart's defaults use;
#   2. MinIO (a pinned release image) in its own namespace; the model and the
#      example audio uploaded;
#   3. the README's `helm install` with charts/whisper-operator/ci/cpu-values.yaml,
#      then `helm test --logs` (the test pod is kept for its logs), a
#      TranscriptionJob from docs/examples, and `helm uninstall --wait` (the
#      pre-delete hook releases every finalizer).
#   usage: tests/e2e/kind.sh            (KEEP=1 keeps the cluster afterwards)
# Needs: docker, kind, kubectl, helm, python with `pip install -e .[dev]`
# (for the model: `whisperop model fetch base-q8_0`).
set -euo pipefail
cd "$(dirname "$0")/../.."
cluster="${KIND_CLUSTER:-whisperop-e2e}"
ns="${NAMESPACE:-whisper}"
minio_image="${MINIO_IMAGE:-quay.io/minio/minio:RELEASE.2025-04-22T22-12-26Z}"
python_image="${PYTHON_IMAGE:-docker.io/library/python:3.12-slim-bookworm}"
app_version="$(sed -n 's/^appVersion: *"\{0,1\}\([^"]*\)"\{0,1\} *$/\1/p' charts/whisper-operator/Chart.yaml)"
operator_image="ghcr.io/whisper-operator/whisperop-operator:$app_version"
inference_image="ghcr.io/whisper-operator/whisperop-inference:$app_version-cpu"
export KUBECONFIG="${KUBECONFIG_OUT:-$PWD/build/kind.kubeconfig}"
mkdir -p "$(dirname "$KUBECONFIG")"

cleanup() { [ "${KEEP:-0}" = 1 ] || kind delete cluster --name "$cluster"; }
trap cleanup EXIT

kind create cluster --name "$cluster" --kubeconfig "$KUBECONFIG" --wait 120s
docker build -f Dockerfile.operator --build-arg PYTHON_IMAGE="$python_image" -t "$operator_image" .
docker build -f Dockerfile.inference --build-arg GGML_CUDA=0 \
  --build-arg BUILD_IMAGE="$python_image" --build-arg RUNTIME_IMAGE="$python_image" -t "$inference_image" .
kind load docker-image --name "$cluster" "$operator_image" "$inference_image"

# S3: MinIO in its own namespace, reached by the release through the Secret the README names
kubectl create namespace whisperop-s3
kubectl -n whisperop-s3 create deployment minio --image="$minio_image" -- minio server /data --address :9000
kubectl -n whisperop-s3 set env deployment/minio MINIO_ROOT_USER=e2e-access MINIO_ROOT_PASSWORD=e2e-secret-key-0123
kubectl -n whisperop-s3 expose deployment minio --port 9000
kubectl -n whisperop-s3 rollout status deployment/minio --timeout=180s
kubectl -n whisperop-s3 port-forward svc/minio 9000:9000 >/dev/null 2>&1 &
pf=$!
trap 'kill "$pf"; cleanup' EXIT
sleep 2

model="$(python -m whisperop model fetch base-q8_0 | tail -n1)"
python - "$model" <<'PY'
import sys, boto3
s3 = boto3.client("s3", endpoint_url="http://127.0.0.1:9000", aws_access_key_id="e2e-access",
                  aws_secret_access_key="e2e-secret-key-0123", region_name="us-east-1")
for b in ("whisperop", "whisperop-models", "whisperop-inputs"):
    try:
        s3.create_bucket(Bucket=b)
    except s3.exceptions.BucketAlreadyOwnedByYou:
        pass
s3.upload_file(sys.argv[1], "whisperop-models", "ggml-base-q8_0.bin")
s3.upload_file("tests/data/jfk.wav", "whisperop-inputs", "jfk.wav")
PY

kubectl create namespace "$ns"
kubectl label namespace "$ns" pod-security.kubernetes.io/enforce=restricted
kubectl -n "$ns" create secret generic whisperop-s3 \
  --from-literal=WHISPEROP_S3_ENDPOINT=http://minio.whisperop-s3.svc:9000 --from-literal=WHISPEROP_S3_BUCKET=whisperop \
  --from-literal=WHISPEROP_S3_REGION=us-east-1 --from-literal=WHISPEROP_S3_ACCESS_KEY=e2e-access \
  --from-literal=WHISPEROP_S3_SECRET_KEY=e2e-secret-key-0123

helm install wo charts/whisper-operator -n "$ns" --create-namespace \
  --set s3.existingSecret=whisperop-s3 --set model.uri=s3://whisperop-models/ggml-base-q8_0.bin \
  -f charts/whisper-operator/ci/cpu-values.yaml --wait --timeout 5m
helm test wo -n "$ns" --timeout 10m --logs

sed 's/^  name: jfk$/  name: jfk\n  namespace: '"$ns"'/' docs/examples/transcriptionjob.yaml | kubectl apply -f -
kubectl -n "$ns" wait transcriptionjob/jfk --for=jsonpath='{.status.phase}'=Done --timeout=10m

helm uninstall wo -n "$ns" --wait --timeout 3m
kubectl delete namespace "$ns" --timeout=2m
echo "kind e2e: passed"
