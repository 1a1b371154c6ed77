{{/* Chart name */}}
{{- define "whisperop.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Fully qualified app name (truncated to 63 chars, the DNS label limit) */}}
{{- define "whisperop.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "whisperop.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Common labels */}}
{{- define "whisperop.labels" -}}
helm.sh/chart: {{ include "whisperop.chart" . }}
{{ include "whisperop.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{- define "whisperop.selectorLabels" -}}
app.kubernetes.io/name: {{ include "whisperop.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/* Component names: operator, facade, worker */}}
{{- define "whisperop.operator.name" -}}{{ include "whisperop.fullname" . | trunc 54 | trimSuffix "-" }}-operator{{- end }}
{{- define "whisperop.facade.name" -}}{{ include "whisperop.fullname" . | trunc 56 | trimSuffix "-" }}-facade{{- end }}
{{- define "whisperop.cleanup.name" -}}{{ include "whisperop.fullname" . | trunc 55 | trimSuffix "-" }}-cleanup{{- end }}
{{- define "whisperop.testPod.name" -}}{{ include "whisperop.fullname" . | trunc 48 | trimSuffix "-" }}-test-first-job{{- end }}
{{- define "whisperop.worker.name" -}}{{ include "whisperop.fullname" . | trunc 56 | trimSuffix "-" }}-worker{{- end }}

{{- define "whisperop.s3SecretName" -}}
{{- if .Values.s3.existingSecret }}{{ .Values.s3.existingSecret }}{{ else }}{{ include "whisperop.fullname" . | trunc 60 | trimSuffix "-" }}-s3{{ end }}
{{- end }}

{{- define "whisperop.authSecretName" -}}
{{- if .Values.facade.auth.existingSecret }}{{ .Values.facade.auth.existingSecret }}{{ else }}{{ include "whisperop.fullname" . | trunc 58 | trimSuffix "-" }}-auth{{ end }}
{{- end }}

{{/* image reference: repository@digest when a digest is set, else repository:tag, where an
empty tag is the appVersion plus "-<variant>" when a variant is set (inference "cpu": 0.1.0-cpu) */}}
{{- define "whisperop.image" -}}
{{- $img := index .root.Values.image .component -}}
{{- if $img.digest -}}
{{ $img.repository }}@{{ $img.digest }}
{{- else -}}
{{- $variant := $img.variant | default "" -}}
{{ $img.repository }}:{{ $img.tag | default (printf "%s%s" .root.Chart.AppVersion (ternary (printf "-%s" $variant) "" (ne $variant ""))) }}
{{- end -}}
{{- end }}

{{/* Pod Security "restricted": pod level */}}
{{- define "whisperop.podSecurityContext" -}}
runAsNonRoot: true
{{- range $k := list "runAsUser" "runAsGroup" "fsGroup" }}
{{- with index $.Values.podSecurityContext $k }}
{{ $k }}: {{ . }}
{{- end }}
{{- end }}
seccompProfile:
  type: RuntimeDefault
{{- end }}

{{/* Pod Security "restricted": container level */}}
{{- define "whisperop.containerSecurityContext" -}}
runAsNonRoot: true
allowPrivilegeEscalation: false
readOnlyRootFilesystem: true
capabilities:
  drop: [ALL]
seccompProfile:
  type: RuntimeDefault
{{- end }}

{{/* S3 settings as env (the Secret holds them all, endpoint/bucket/region included) */}}
{{- define "whisperop.s3Env" -}}
- secretRef:
    name: {{ include "whisperop.s3SecretName" . }}
{{- end }}

{{- define "whisperop.extraEnv" -}}
{{- range $k, $v := . }}
- name: {{ $k }}
  value: {{ $v | quote }}
{{- end }}
{{- end }}
