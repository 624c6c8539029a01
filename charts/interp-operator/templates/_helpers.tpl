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

{{- define "interp-operator.image" -}}
{{- printf "%s:%s" .Values.image.repository (.Values.image.tag | default .Chart.AppVersion) }}
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
# Read-only: an InterpInferenceService names the Secret holding its API keys; the operator never writes Secrets.
- apiGroups: [""]
  resources: ["secrets"]
  verbs: ["get", "list", "watch"]
- apiGroups: [""]
  resources: ["events"]
  verbs: ["create", "patch"]
- apiGroups: ["events.k8s.io"]
  resources: ["events"]
  verbs: ["create", "patch"]
# kopf's peering keeps a single active operator per namespace.
- apiGroups: ["kopf.dev"]
  resources: ["kopfpeerings"]
  verbs: ["get", "list", "watch", "patch"]
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
- apiGroups: ["kopf.dev"]
  resources: ["clusterkopfpeerings"]
  verbs: ["get", "list", "watch", "patch"]
{{- end }}
