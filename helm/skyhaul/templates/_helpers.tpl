{{/*
Names. Every object is "<fullname>-<component>[-<id>]", truncated to the 63 characters a DNS label
allows.
*/}}
{{- define "skyhaul.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "skyhaul.fullname" -}}
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

{{- define "skyhaul.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Name of one workload: (dict "ctx" $ "component" "region" "id" "westus2"); id may be empty. */}}
{{- define "skyhaul.workloadName" -}}
{{- $base := printf "%s-%s" (include "skyhaul.fullname" .ctx) .component }}
{{- if .id }}{{ $base = printf "%s-%s" $base .id }}{{ end }}
{{- $base | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Selector labels: (dict "ctx" $ "component" "orbit" "id" ""). Immutable once deployed. */}}
{{- define "skyhaul.selectorLabels" -}}
app.kubernetes.io/name: {{ include "skyhaul.name" .ctx }}
app.kubernetes.io/instance: {{ .ctx.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- if eq .component "region" }}
skyhaul/region: {{ .id }}
{{- else if and (eq .component "mdc") .shard }}
skyhaul/shard: {{ .id }}
{{- else if eq .component "mdc" }}
skyhaul/data-center: {{ .id }}
{{- end }}
{{- end }}

{{/* The recommended labels plus the selector labels: (dict "ctx" $ "component" ... "id" ...). */}}
{{- define "skyhaul.labels" -}}
helm.sh/chart: {{ include "skyhaul.chart" .ctx }}
{{ include "skyhaul.selectorLabels" . }}
app.kubernetes.io/version: {{ .ctx.Chart.AppVersion | quote }}
app.kubernetes.io/part-of: skyhaul
app.kubernetes.io/managed-by: {{ .ctx.Release.Service }}
{{- end }}

{{- define "skyhaul.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}

{{- define "skyhaul.scenarioConfigMap" -}}
{{- printf "%s-scenario" (include "skyhaul.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* The in-chart Redis's URL carries its password through SKYHAUL_REDIS_PASSWORD, which
skyhaul.commonEnv defines (from the Secret) before this variable refers to it. */}}
{{- define "skyhaul.redisUrl" -}}
{{- if .Values.redis.externalUrl }}
{{- .Values.redis.externalUrl }}
{{- else }}
{{- printf "redis://:$(SKYHAUL_REDIS_PASSWORD)@%s-redis:6379/0" (include "skyhaul.fullname" .) }}
{{- end }}
{{- end }}

{{/* The Secret with the token, the event key and the Redis password (templates/secret.yaml). */}}
{{- define "skyhaul.secretName" -}}
{{- if .Values.security.existingSecret }}
{{- .Values.security.existingSecret }}
{{- else }}
{{- printf "%s-secrets" (include "skyhaul.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}

{{/* One variable from the release's Secret: (dict "ctx" $ "name" "SKYHAUL_TOKEN" "key" "token"). */}}
{{- define "skyhaul.secretEnv" -}}
- name: {{ .name }}
  valueFrom:
    secretKeyRef:
      name: {{ include "skyhaul.secretName" .ctx }}
      key: {{ .key }}
{{- end }}

{{/* OTLP endpoint, or empty when telemetry is off or has nowhere to go. */}}
{{- define "skyhaul.otlpEndpoint" -}}
{{- if .Values.telemetry.enabled }}
{{- if .Values.telemetry.otlpEndpoint }}
{{- .Values.telemetry.otlpEndpoint }}
{{- else if .Values.jaeger.enabled }}
{{- printf "http://%s-jaeger:%s" (include "skyhaul.fullname" .) (ternary "4317" "4318" (eq .Values.telemetry.protocol "grpc")) }}
{{- end }}
{{- end }}
{{- end }}

{{/* Jaeger v2's configuration (an OpenTelemetry Collector config): OTLP in, memory store, query
API and UI, health at :13133/status. Ports here and in templates/jaeger.yaml go together. */}}
{{- define "skyhaul.jaegerConfig" -}}
service:
  extensions: [jaeger_storage, jaeger_query, healthcheckv2]
  pipelines:
    traces:
      receivers: [otlp]
      processors: [batch]
      exporters: [jaeger_storage_exporter]
  telemetry:
    resource:
      service.name: jaeger
    logs:
      level: info
extensions:
  healthcheckv2:
    use_v2: true
    http:
      endpoint: 0.0.0.0:13133
  jaeger_storage:
    backends:
      memstore:
        memory:
          # the oldest traces are dropped beyond it
          max_traces: {{ .Values.jaeger.maxTraces }}
  jaeger_query:
    storage:
      traces: memstore
    http:
      endpoint: 0.0.0.0:16686
    grpc:
      endpoint: 0.0.0.0:16685
receivers:
  otlp:
    protocols:
      grpc:
        endpoint: 0.0.0.0:4317
      http:
        endpoint: 0.0.0.0:4318
processors:
  batch: {}
exporters:
  jaeger_storage_exporter:
    trace_storage: memstore
{{- end }}

{{/* Address (host:port) of a Skyhaul Service: (dict "ctx" $ "component" "region" "id" "westus2"). */}}
{{- define "skyhaul.serviceAddr" -}}
{{- printf "%s:%v" (include "skyhaul.workloadName" .) (index .ctx.Values.components .component).port }}
{{- end }}

{{- define "skyhaul.podSecurityContext" -}}
runAsNonRoot: true
runAsUser: 10001
runAsGroup: 10001
fsGroup: 10001
seccompProfile:
  type: RuntimeDefault
{{- end }}

{{- define "skyhaul.containerSecurityContext" -}}
allowPrivilegeEscalation: false
readOnlyRootFilesystem: true
runAsNonRoot: true
capabilities:
  drop: [ALL]
seccompProfile:
  type: RuntimeDefault
{{- end }}

{{/*
Native gRPC probes. Readiness and startup use the overall status (service ""), which is SERVING
only while the service's dependencies answer. Liveness asks the "liveness" service, which the
runner keeps SERVING while the process's event loop runs: losing Redis must take a pod out of
rotation, not restart it (a restart does not bring Redis back).
*/}}
{{- define "skyhaul.grpcProbes" -}}
startupProbe:
  grpc: {port: {{ . }}}
  periodSeconds: 2
  failureThreshold: 90
readinessProbe:
  grpc: {port: {{ . }}}
  periodSeconds: 5
  failureThreshold: 3
livenessProbe:
  grpc: {port: {{ . }}, service: liveness}
  periodSeconds: 10
  timeoutSeconds: 5
  failureThreshold: 6
{{- end }}

{{/*
Environment every Skyhaul container shares: (dict "ctx" $ "service" "orbit" "attributes" "...").
POD_NAME and POD_NAMESPACE come first so OTEL_RESOURCE_ATTRIBUTES can refer to them.
*/}}
{{- define "skyhaul.commonEnv" -}}
{{- $ctx := .ctx -}}
- name: POD_NAME
  valueFrom: {fieldRef: {fieldPath: metadata.name}}
- name: POD_NAMESPACE
  valueFrom: {fieldRef: {fieldPath: metadata.namespace}}
- name: SKYHAUL_SCENARIO
  value: /etc/skyhaul/scenario.yaml
{{ include "skyhaul.secretEnv" (dict "ctx" $ctx "name" "SKYHAUL_TOKEN" "key" "token") }}
{{ include "skyhaul.secretEnv" (dict "ctx" $ctx "name" "SKYHAUL_EVENT_KEY" "key" "eventKey") }}
{{- if not $ctx.Values.redis.externalUrl }}
{{ include "skyhaul.secretEnv" (dict "ctx" $ctx "name" "SKYHAUL_REDIS_PASSWORD" "key" "redisPassword") }}
{{- end }}
- name: SKYHAUL_REDIS_URL
  value: {{ include "skyhaul.redisUrl" $ctx | quote }}
- name: SKYHAUL_DATA_DIR
  value: /data
- name: SKYHAUL_LOG_LEVEL
  value: {{ $ctx.Values.logLevel | quote }}
- name: SKYHAUL_ORBIT_ADDR
  value: {{ include "skyhaul.serviceAddr" (dict "ctx" $ctx "component" "orbit") | quote }}
- name: SKYHAUL_LINKS_ADDR
  value: {{ include "skyhaul.serviceAddr" (dict "ctx" $ctx "component" "links") | quote }}
{{- if $ctx.Values.clockStart }}
- name: SKYHAUL_CLOCK_START
  value: {{ $ctx.Values.clockStart | quote }}
{{- end }}
{{- /* The same service.name as local runs (skyhaul.runtime.telemetry.service_name). */}}
- name: OTEL_SERVICE_NAME
  value: {{ printf "skyhaul-%s" .service | quote }}
{{- with include "skyhaul.otlpEndpoint" $ctx }}
- name: OTEL_EXPORTER_OTLP_ENDPOINT
  value: {{ . | quote }}
- name: OTEL_EXPORTER_OTLP_PROTOCOL
  value: {{ $ctx.Values.telemetry.protocol | quote }}
{{- end }}
- name: OTEL_RESOURCE_ATTRIBUTES
  value: {{ printf "service.namespace=%s,k8s.namespace.name=$(POD_NAMESPACE),k8s.pod.name=$(POD_NAME)%s" $ctx.Release.Name .attributes | quote }}
{{- end }}

{{/* Extra env of a component from values (components.<name>.env), sorted by name. */}}
{{- define "skyhaul.extraEnv" -}}
{{- range $name, $value := . }}
- name: {{ $name }}
  value: {{ $value | toString | quote }}
{{- end }}
{{- end }}

{{/* Volume mounts every Skyhaul container has: the scenario, /tmp and /data. */}}
{{- define "skyhaul.volumeMounts" -}}
- name: scenario
  mountPath: /etc/skyhaul
  readOnly: true
- name: tmp
  mountPath: /tmp
- name: {{ . }}
  mountPath: /data
{{- end }}

{{/* Pod-level settings shared by Skyhaul, Redis and Jaeger pods. */}}
{{- define "skyhaul.podCommon" -}}
automountServiceAccountToken: false
# Service links would inject SKYHAUL_ORBIT_PORT=tcp://... and similar into the SKYHAUL_* namespace.
enableServiceLinks: false
{{- with .Values.imagePullSecrets }}
imagePullSecrets:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .Values.nodeSelector }}
nodeSelector:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .Values.tolerations }}
tolerations:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end }}

{{/*
Workload instances of a component, as a YAML list: orbit and links run once; region once per
scenario region; mdc once per scenario data center (with its home region). Args: (dict "ctx" $
"component" name).
*/}}
{{- define "skyhaul.instances" -}}
{{- $scenario := .ctx.Values.scenario }}
{{- if eq .component "region" }}
{{- range $scenario.regions }}
- id: {{ .id | quote }}
{{- end }}
{{- else if and (eq .component "mdc") (gt (int (default 0 .ctx.Values.components.mdc.shards)) 0) }}
{{- $count := int .ctx.Values.components.mdc.shards }}
{{- if gt $count (len $scenario.data_centers) }}
{{- fail (printf "components.mdc.shards: %d shards for %d data centers; every shard must hold one (use at most %d, or 0 for one pod per data center)" $count (len $scenario.data_centers) (len $scenario.data_centers)) }}
{{- end }}
{{- range $index := until $count }}
- id: {{ printf "shard-%d" $index | quote }}
  shard: {{ printf "%d/%d" $index $count | quote }}
  size: {{ len (include "skyhaul.shardMembers" (dict "ctx" $.ctx "index" $index "count" $count) | fromYamlArray) }}
{{- end }}
{{- else if eq .component "mdc" }}
{{- range $scenario.data_centers }}
- id: {{ .id | quote }}
  homeRegion: {{ .home_region | quote }}
{{- end }}
{{- else }}
- id: ""
{{- end }}
{{- end }}

{{/*
The data center ids of shard `index` of `count`: those at scenario positions p with p % count ==
index, the rule the services apply to SKYHAUL_SHARD (runtime/settings.py shard_members).
*/}}
{{- define "skyhaul.shardMembers" -}}
{{- range $position, $dc := .ctx.Values.scenario.data_centers }}
{{- if eq (mod $position $.count) $.index }}
- {{ $dc.id | quote }}
{{- end }}
{{- end }}
{{- end }}

{{/* REGION=host:port of every scenario region (SKYHAUL_REGION_ADDRS of a shard). */}}
{{- define "skyhaul.regionAddrs" -}}
{{- $items := list }}
{{- range .Values.scenario.regions }}
{{- $items = append $items (printf "%s=%s" .id (include "skyhaul.serviceAddr" (dict "ctx" $ "component" "region" "id" .id))) }}
{{- end }}
{{- join "," $items }}
{{- end }}

{{/*
The scenario as the services load it: .Values.scenario with the default constellation filled in
when values name none (see the constellation comment in values.yaml).
*/}}
{{- define "skyhaul.scenario" -}}
{{- $scenario := deepCopy .Values.scenario }}
{{- $constellation := default dict $scenario.constellation }}
{{- if not (or $constellation.preset $constellation.tle_file $constellation.shells) }}
{{- $_ := set $constellation "preset" "starlink-2020-10" }}
{{- end }}
{{- $_ := set $scenario "constellation" $constellation }}
{{- toYaml $scenario }}
{{- end }}
