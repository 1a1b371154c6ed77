#!/usr/bin/env bash
# End-to-end on a kind cluster, for CI runners that have Docker (it cannot run on
# the project machine: no container engine there, so it has never been run
# there — only shellcheck'd; expect first-run fixes). It creates a kind cluster,
# builds and loads both images, runs MinIO in the cluster, `helm install`s the
# chart and runs the cluster test suites through KUBECONFIG (the external mode of
# whisperop.testenv, docs/testing.md). kind has no GPU: the model runs with gpus=0.
#   usage: tests/e2e/kind.sh            (KEEP=1 keeps the cluster afterwards)
# Needs: docker, kind, kubectl, helm, python with `pip install -e .[dev]`.
set -euo pipefail
cd "$(dirname "$0")/../.."
cluster="${KIND_CLUSTER:-whisperop-e2e}"
ns="${NAMESPACE:-whisper}"
tag="e2e-$(git rev-parse --short HEAD)"
export KUBECONFIG="${KUBECONFIG_OUT:-$PWD/build/kind.kubeconfig}"
mkdir -p "$(dirname "$KUBECONFIG")"

cleanup() { [ "${KEEP:-0}" = 1 ] || kind delete cluster --name "$cluster"; }
trap cleanup EXIT

kind create cluster --name "$cluster" --kubeconfig "$KUBECONFIG" --wait 120s
docker build -f Dockerfile.operator -t "whisperop-operator:$tag" .
docker build -f Dockerfile.inference --build-arg CUDA_ARCHITECTURES=80 -t "whisperop-inference:$tag" .
kind load docker-image --name "$cluster" "whisperop-operator:$tag" "whisperop-inference:$tag"

# S3 for the cluster and for the tests (port-forwarded)
kubectl create namespace "$ns"
kubectl -n "$ns" create deployment minio --image=quay.io/minio/minio -- minio server /data
kubectl -n "$ns" set env deployment/minio MINIO_ROOT_USER=e2e-access MINIO_ROOT_PASSWORD=e2e-secret-key
kubectl -n "$ns" expose deployment minio --port 9000
kubectl -n "$ns" rollout status deployment/minio --timeout=180s
kubectl -n "$ns" port-forward svc/minio 9000:9000 >/dev/null 2>&1 &
pf=$!
trap 'kill "$pf"; cleanup' EXIT

helm install wo charts/whisper-operator -n "$ns" --wait --timeout 5m \
  --set image.operator.repository=whisperop-operator --set image.operator.tag="$tag" \
  --set image.inference.repository=whisperop-inference --set image.inference.tag="$tag" \
  --set image.pullPolicy=Never \
  --set s3.endpoint="http://minio.$ns.svc:9000" --set s3.bucket=whisperop-test \
  --set s3.accessKey=e2e-access --set s3.secretKey=e2e-secret-key \
  --set model.gpus=0 --set model.uri=s3://whisperop-test/models/ggml-tiny-random.bin

export WHISPEROP_TESTENV=external WHISPEROP_REQUIRE_CLUSTER=1
export WHISPEROP_S3_ENDPOINT=http://127.0.0.1:9000 WHISPEROP_S3_BUCKET=whisperop-test
export WHISPEROP_S3_ACCESS_KEY=e2e-access WHISPEROP_S3_SECRET_KEY=e2e-secret-key
python -m whisperop model tiny -o build/ggml-tiny-random.bin
python - <<'PY'
import boto3, os
s3 = boto3.client("s3", endpoint_url=os.environ["WHISPEROP_S3_ENDPOINT"], aws_access_key_id=os.environ["WHISPEROP_S3_ACCESS_KEY"],
                  aws_secret_access_key=os.environ["WHISPEROP_S3_SECRET_KEY"], region_name="us-east-1")
try:
    s3.create_bucket(Bucket="whisperop-test")
except s3.exceptions.BucketAlreadyOwnedByYou:
    pass
s3.upload_file("build/ggml-tiny-random.bin", "whisperop-test", "models/ggml-tiny-random.bin")
PY
helm test wo -n "$ns" --timeout 10m --logs
pytest -m cluster tests/operator tests/chart
