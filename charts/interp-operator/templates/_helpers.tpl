{{/*
Chart name, truncated to the 63 characters a label value may hold.
*/}}
{{- define "interp-operator.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Full name for every object of the release: the release name alone when it already contains the chart name.
*/}}
{{- define "interp-operator.fullname" -}}
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

{{- define "interp-operator.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Standard labels on every object but the component, for objects that are not part of the operator itself.
*/}}
{{- define "interp-operator.commonLabels" -}}
helm.sh/chart: {{ include "interp-operator.chart" . }}
app.kubernetes.io/name: {{ include "interp-operator.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Values.image.tag | default .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: interp-operator
{{- end }}

{{/*
Standard labels on the operator's objects.
*/}}
{{- define "interp-operator.labels" -}}
{{ include "interp-operator.commonLabels" . }}
app.kubernetes.io/component: operator
{{- end }}

{{/*
Labels that select the operator pod; they must never change between upgrades (Deployment selectors are immutable).
*/}}
{{- define "interp-operator.selectorLabels" -}}
app.kubernetes.io/name: {{ include "interp-operator.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: operator
{{- end }}

{{- define "interp-operator.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "interp-operator.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- required "serviceAccount.name is required when serviceAccount.create is false" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/*
The operator image: pinned by digest when one is given (a tag can be moved, a digest cannot).
*/}}
{{- define "interp-operator.image" -}}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository (.Values.image.tag | default .Chart.AppVersion) }}
{{- end }}
{{- end }}

{{/*
An `enabled: auto | true | false` switch: "true" when on, "" when off; `auto` is on with more than one replica.
*/}}
{{- define "interp-operator.switch" -}}
{{- $enabled := toString (index . 0) }}
{{- if or (eq $enabled "true") (and (eq $enabled "auto") (gt (int (index . 1)) 1)) }}true{{ end }}
{{- end }}

{{/*
Whether the replicas join a kopf peering: kopf lets only the highest-priority live peer reconcile, so
standbys never act on the same jobs as the active replica.
*/}}
{{- define "interp-operator.peering" -}}
{{- include "interp-operator.switch" (list .Values.peering.enabled .Values.replicas) }}
{{- end }}

{{- define "interp-operator.peeringName" -}}
{{- .Values.peering.name | default (include "interp-operator.fullname" .) }}
{{- end }}

{{- define "interp-operator.podDisruptionBudget" -}}
{{- include "interp-operator.switch" (list .Values.podDisruptionBudget.enabled .Values.replicas) }}
{{- end }}

{{/*
Watched namespaces, sorted and de-duplicated so the rendered Roles and arguments are stable.
*/}}
{{- define "interp-operator.watchNamespaces" -}}
{{- .Values.watchNamespaces | uniq | sortAlpha | toJson }}
{{- end }}

{{/*
Rules for the namespaced resources the operator reconciles and creates. Used by the ClusterRole when watching
every namespace, and by one Role per namespace otherwise.
*/}}
{{- define "interp-operator.namespacedRules" -}}
- apiGroups: ["interp.dev"]
  resources: ["saetrainingjobs", "activationdumps", "interpinferenceservices"]
  # delete: ttlSecondsAfterFinished removes finished objects.
  verbs: ["get", "list", "watch", "patch", "update", "delete"]
- apiGroups: ["interp.dev"]
  resources: ["saetrainingjobs/status", "activationdumps/status", "interpinferenceservices/status"]
  verbs: ["get", "patch", "update"]
# kopf's finalizer makes a deletion wait until the operator has cleaned up what the job created.
- apiGroups: ["interp.dev"]
  resources: ["saetrainingjobs/finalizers", "activationdumps/finalizers", "interpinferenceservices/finalizers"]
  verbs: ["update"]
- apiGroups: [""]
  resources: ["pods", "services"]
  verbs: ["get", "list", "watch", "create", "delete", "patch"]
- apiGroups: [""]
  resources: ["configmaps"]
  verbs: ["get", "list", "watch", "create", "delete", "patch", "update"]
- apiGroups: [""]
  resources: ["events"]
  verbs: ["create", "patch"]
- apiGroups: ["events.k8s.io"]
  resources: ["events"]
  verbs: ["create", "patch"]
{{- if and (include "interp-operator.peering" .) .Values.watchNamespaces }}
# A namespaced operator joins the KopfPeering of each namespace it watches: it watches the peering and patches
# its own entry into the status (the chart creates the object).
- apiGroups: ["kopf.dev"]
  resources: ["kopfpeerings"]
  verbs: ["list", "watch", "patch"]
{{- end }}
{{- if .Values.scheduling.volcano.enabled }}
# Gangs hand their pods to Volcano through a PodGroup.
- apiGroups: ["scheduling.volcano.sh"]
  resources: ["podgroups"]
  verbs: ["get", "list", "watch", "create", "delete", "patch"]
{{- end }}
{{- if .Values.scheduling.coscheduling.enabled }}
# Gangs hand their pods to the scheduler-plugins coscheduling plugin through a PodGroup.
- apiGroups: ["scheduling.x-k8s.io"]
  resources: ["podgroups"]
  verbs: ["get", "list", "watch", "create", "delete", "patch"]
{{- end }}
{{- end }}

{{/*
Reads of cluster-scoped resources, needed in both watch modes.
*/}}
{{- define "interp-operator.clusterRules" -}}
# Topology-aware placement reads node labels (zone, rack, GPU product).
- apiGroups: [""]
  resources: ["nodes"]
  verbs: ["get", "list", "watch"]
# kopf lists namespaces to resolve what it serves.
- apiGroups: [""]
  resources: ["namespaces"]
  verbs: ["get", "list", "watch"]
# kopf scans the CRDs to find the resources it serves.
- apiGroups: ["apiextensions.k8s.io"]
  resources: ["customresourcedefinitions"]
  verbs: ["get", "list", "watch"]
{{- if and (include "interp-operator.peering" .) (not .Values.watchNamespaces) }}
# A cluster-wide operator joins the ClusterKopfPeering: it watches the peering and patches its own entry.
- apiGroups: ["kopf.dev"]
  resources: ["clusterkopfpeerings"]
  verbs: ["list", "watch", "patch"]
{{- end }}
{{- if .Values.metrics.secure }}
# The secure metrics endpoint checks each scrape's bearer token and its right to get /metrics. Both reviews are
# cluster-scoped, so they sit here in either watch mode.
- apiGroups: ["authentication.k8s.io"]
  resources: ["tokenreviews"]
  verbs: ["create"]
- apiGroups: ["authorization.k8s.io"]
  resources: ["subjectaccessreviews"]
  verbs: ["create"]
{{- end }}
{{- end }}

{{/*
Where the metrics serving certificate of metrics.certSecret is mounted (--metrics-cert-dir).
*/}}
{{- define "interp-operator.metricsCertDir" -}}
/etc/interp-operator/metrics-certs
{{- end }}

{{/*
Refuse value combinations the schema cannot express, with the value to change.
*/}}
{{- define "interp-operator.validate" -}}
{{- if eq (int .Values.metrics.port) (int .Values.health.port) }}
{{- fail "metrics.port and health.port must differ" }}
{{- end }}
{{- if and (gt (int .Values.replicas) 1) (not (include "interp-operator.peering" .)) }}
{{- fail "replicas > 1 needs peering.enabled (auto or true): replicas without kopf peering would all reconcile the same jobs" }}
{{- end }}
{{- $pdb := .Values.podDisruptionBudget }}
{{- /* A number: float64 from a values file or --set-json, int64 from --set; a percentage is a string. */}}
{{- $count := and (not (kindIs "invalid" $pdb.minAvailable)) (not (kindIs "string" $pdb.minAvailable)) }}
{{- if and (include "interp-operator.podDisruptionBudget" .) $count (ge (int $pdb.minAvailable) (int .Values.replicas)) }}
{{- fail (printf "podDisruptionBudget.minAvailable %d with %d replicas would block every node drain; lower it or use maxUnavailable" (int $pdb.minAvailable) (int .Values.replicas)) }}
{{- end }}
{{- range .Values.extraVolumes }}
{{- if eq .name "tmp" }}
{{- fail "extraVolumes: the volume name tmp is the chart's own (the writable /tmp); pick another" }}
{{- end }}
{{- if and (eq .name "metrics-certs") $.Values.metrics.certSecret }}
{{- fail "extraVolumes: the volume name metrics-certs is the chart's own (metrics.certSecret); pick another" }}
{{- end }}
{{- end }}
{{- if and .Values.metrics.certSecret (not .Values.metrics.secure) }}
{{- fail "metrics.certSecret needs metrics.secure=true: the certificate serves the HTTPS endpoint" }}
{{- end }}
{{- if not .Values.serviceAccount.automount }}
{{- $tokenMounted := false }}
{{- range .Values.extraVolumeMounts }}
{{- if eq (trimSuffix "/" .mountPath) "/var/run/secrets/kubernetes.io/serviceaccount" }}
{{- $tokenMounted = true }}
{{- end }}
{{- end }}
{{- if not $tokenMounted }}
{{- fail "serviceAccount.automount is false but no extraVolumeMounts entry mounts a token at /var/run/secrets/kubernetes.io/serviceaccount: the operator could not reach the API server" }}
{{- end }}
{{- end }}
{{- end }}
