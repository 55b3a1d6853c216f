{{/* Chart name. */}}
{{- define "ferrocast.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Full name of the release's objects (63 characters at most, room left for suffixes). */}}
{{- define "ferrocast.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 54 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 54 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 54 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "ferrocast.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Labels of every object. */}}
{{- define "ferrocast.labels" -}}
helm.sh/chart: {{ include "ferrocast.chart" . }}
{{ include "ferrocast.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: ferrocast
{{- end }}

{{/* Labels of the embedded Redis objects. */}}
{{- define "ferrocast.redis.labels" -}}
helm.sh/chart: {{ include "ferrocast.chart" . }}
{{ include "ferrocast.redis.selectorLabels" . }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: ferrocast
{{- end }}

{{/* Selector of the ferrocast pods. */}}
{{- define "ferrocast.selectorLabels" -}}
app.kubernetes.io/name: {{ include "ferrocast.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: broker
{{- end }}

{{/* Selector of the embedded Redis pod. */}}
{{- define "ferrocast.redis.selectorLabels" -}}
app.kubernetes.io/name: {{ include "ferrocast.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: redis
{{- end }}

{{- define "ferrocast.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "ferrocast.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "ferrocast.image" -}}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}
{{- end }}

{{/* Name of the Secret holding the token key and the API key. */}}
{{- define "ferrocast.secretName" -}}
{{- default (include "ferrocast.fullname" .) .Values.secrets.existingSecret }}
{{- end }}

{{- define "ferrocast.redis.fullname" -}}
{{- printf "%s-redis" (include "ferrocast.fullname" .) }}
{{- end }}

{{/* Redis addresses written into the configuration. */}}
{{- define "ferrocast.redis.addresses" -}}
{{- if .Values.redis.embedded.enabled }}
{{- list (printf "redis://%s:6379" (include "ferrocast.redis.fullname" .)) | toJson }}
{{- else }}
{{- .Values.redis.address | toJson }}
{{- end }}
{{- end }}

{{/* terminationGracePeriodSeconds: preStop + drain window + 7 s for sockets to close + margin. */}}
{{- define "ferrocast.terminationGracePeriodSeconds" -}}
{{- $s := .Values.shutdown }}
{{- $minimum := add (int $s.preStopSleepSeconds) (int $s.drainWindowSeconds) 7 }}
{{- if kindIs "invalid" $s.terminationGracePeriodSeconds }}
{{- add $minimum 8 }}
{{- else if le (int $s.terminationGracePeriodSeconds) $minimum }}
{{- fail (printf "shutdown.terminationGracePeriodSeconds (%d) must exceed preStopSleepSeconds + drainWindowSeconds + 7 (%d): the pod would be killed before its clients are drained" (int $s.terminationGracePeriodSeconds) $minimum) }}
{{- else }}
{{- int $s.terminationGracePeriodSeconds }}
{{- end }}
{{- end }}

{{/*
The ferrocast configuration file (JSON): values.config with the chart-managed keys on top.
*/}}
{{- define "ferrocast.config" -}}
{{- $managed := dict
  "http_server" (dict
    "address" "0.0.0.0"
    "port" (int .Values.ports.client)
    "internal_port" (int .Values.ports.internal)
    "internal_address" "0.0.0.0")
  "engine" (dict
    "type" "redis"
    "redis" (dict "address" (include "ferrocast.redis.addresses" . | fromJsonArray)))
  "shutdown" (dict "drain_window" (printf "%ds" (int .Values.shutdown.drainWindowSeconds)))
  "grpc_api" (dict "address" "0.0.0.0" "port" (int .Values.ports.grpcApi))
}}
{{- mergeOverwrite (deepCopy .Values.config) $managed | toPrettyJson }}
{{- end }}
