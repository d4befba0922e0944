{{/* Names and labels shared by every template. */}}

{{- define "forescale.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "forescale.fullname" -}}
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

{{- define "forescale.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "forescale.selectorLabels" -}}
app.kubernetes.io/name: {{ include "forescale.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "forescale.labels" -}}
helm.sh/chart: {{ include "forescale.chart" . }}
{{ include "forescale.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: forescale
{{- end }}

{{- define "forescale.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "forescale.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "forescale.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}

{{/*
RBAC: exactly what the operator's code uses. tests/chart/test_chart.py compares the union of
these rules with forescale.controller.rbac.required_rules(), so a verb the code stops using
(or starts using) fails CI until it is changed here too.

Cluster-scoped resources kopf reads to discover and serve resources.
*/}}
{{- define "forescale.rules.cluster" -}}
# kopf re-scans the served resources when CRDs change.
- apiGroups: [apiextensions.k8s.io]
  resources: [customresourcedefinitions]
  verbs: [get, list, watch]
# kopf's namespace observer: which namespaces exist and appear.
- apiGroups: [""]
  resources: [namespaces]
  verbs: [get, list, watch]
{{- end }}

{{/* Namespaced resources: in a ClusterRole, or in a Role per watched namespace. */}}
{{- define "forescale.rules.namespaced" -}}
# Watch the policies; patch is kopf's finalizer (lease release on delete) and annotations.
- apiGroups: [forescale.dev]
  resources: [scalingpolicies]
  verbs: [get, list, watch, patch]
- apiGroups: [forescale.dev]
  resources: [scalingpolicies/status]
  verbs: [get, patch]
# Replicas are read and written through /scale only; the workload itself is never read.
- apiGroups: [apps]
  resources: [deployments/scale, statefulsets/scale, replicasets/scale]
  verbs: [get, patch]
# Events for scaling actions, fallbacks and errors.
- apiGroups: [""]
  resources: [events]
  verbs: [create]
# Refuse to fight: another autoscaler on the same target means ConflictingAutoscaler.
- apiGroups: [autoscaling]
  resources: [horizontalpodautoscalers]
  verbs: [list]
- apiGroups: [keda.sh]
  resources: [scaledobjects]
  verbs: [list]
{{- end }}

{{/* Leases, in the release's own namespace only (never cluster-wide: not kube-system's).
One Lease per target: whoever holds it is the only one that scales it (takeover is an
update with a resourceVersion precondition, release a delete); one per replica, listed to
share the targets among the live replicas. */}}
{{- define "forescale.rules.leases" -}}
- apiGroups: [coordination.k8s.io]
  resources: [leases]
  verbs: [get, list, create, update, delete]
{{- end }}

{{/* kopf peering keep-alives (only with peering.enabled). */}}
{{- define "forescale.rules.peering.cluster" -}}
- apiGroups: [kopf.dev]
  resources: [clusterkopfpeerings]
  verbs: [get, list, watch, patch]
{{- end }}

{{- define "forescale.rules.peering.namespaced" -}}
- apiGroups: [kopf.dev]
  resources: [kopfpeerings]
  verbs: [get, list, watch, patch]
{{- end }}

{{/* Fail early on combinations that cannot work. */}}
{{- define "forescale.validate" -}}
{{- if and .Values.rbac.namespaced (empty .Values.watchNamespaces) }}
{{- fail "rbac.namespaced needs watchNamespaces: a Role per namespace cannot cover all namespaces" }}
{{- end }}
{{- if and .Values.peering.enabled (gt (int .Values.replicaCount) 1) }}
{{- fail "peering.enabled needs replicaCount 1: kopf pauses every peer of equal priority" }}
{{- end }}
{{- /* kopf's peering CRDs are not the chart's: they are cluster-wide, shared with every other
kopf operator (Helm would refuse to adopt them), and a CRD and its objects cannot be created
in one release (Helm maps every object before creating any). So they must be installed
beforehand; without the one the peering object needs, fail with what to do rather than with
Helm's "resource mapping not found". */}}
{{- if .Values.peering.enabled }}
{{- $kind := ternary "KopfPeering" "ClusterKopfPeering" (not (empty .Values.watchNamespaces)) }}
{{- if not (.Capabilities.APIVersions.Has (printf "kopf.dev/v1/%s" $kind)) }}
{{- fail (printf "peering.enabled needs kopf's peering CRDs (kopf.dev/v1 %s), which this chart does not install: kubectl apply -f https://github.com/nolar/kopf/raw/main/peering.yaml (offline: helm template --api-versions kopf.dev/v1/%s)" $kind $kind) }}
{{- end }}
{{- end }}
{{- if and (eq .Values.models.source "configMap") (empty .Values.models.configMapName) }}
{{- fail "models.source configMap needs models.configMapName" }}
{{- end }}
{{- if and (eq .Values.models.source "volume") (empty .Values.models.volume) }}
{{- fail "models.source volume needs models.volume (a volume source)" }}
{{- end }}
{{- if and (not .Values.serviceAccount.create) (empty .Values.serviceAccount.name) }}
{{- fail "serviceAccount.create=false needs serviceAccount.name: otherwise the operator's ClusterRole (patch on every /scale) would be bound to the namespace's default ServiceAccount, which every pod there uses" }}
{{- end }}
{{- if and .Values.serviceMonitor.enabled .Values.serviceMonitor.scrapeTimeout }}
{{- $timeout := include "forescale.milliseconds" .Values.serviceMonitor.scrapeTimeout | atoi }}
{{- $interval := include "forescale.milliseconds" .Values.serviceMonitor.interval | atoi }}
{{- if gt $timeout $interval }}
{{- fail (printf "serviceMonitor.scrapeTimeout (%s) must not exceed serviceMonitor.interval (%s): Prometheus refuses such a scrape config, and nothing would be scraped" .Values.serviceMonitor.scrapeTimeout .Values.serviceMonitor.interval) }}
{{- end }}
{{- end }}
{{- end }}

{{- /* The metrics Service: a DNS-1035 label (63 characters at most) with its suffix. */}}
{{- define "forescale.metricsService" -}}
{{- include "forescale.fullname" . | trunc 55 | trimSuffix "-" }}-metrics
{{- end }}

{{- /* A Prometheus duration of the values' schema (e.g. 1m30s, 500ms) in milliseconds. */}}
{{- define "forescale.milliseconds" -}}
{{- $total := 0 -}}
{{- $unit := dict "ms" 1 "s" 1000 "m" 60000 "h" 3600000 -}}
{{- range regexFindAll "[0-9]+(ms|s|m|h)" . -1 -}}
{{- $total = add $total (mul (regexFind "^[0-9]+" . | atoi) (get $unit (regexFind "(ms|s|m|h)$" .))) -}}
{{- end -}}
{{- $total -}}
{{- end }}
