{{/* Names, labels and the operator's RBAC rules, shared by the templates. */}}

{{- define "ftjob.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 40 | trimSuffix "-" }}
{{- end }}

{{/*
Prefix of every object name. Kept to 40 characters so that suffixes such as "-metrics" and
"-cluster" stay inside the 63-character limit of names and label values.
*/}}
{{- define "ftjob.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 40 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 40 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 40 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "ftjob.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "ftjob.selectorLabels" -}}
app.kubernetes.io/name: {{ include "ftjob.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: operator
{{- end }}

{{- define "ftjob.labels" -}}
helm.sh/chart: {{ include "ftjob.chart" . }}
{{ include "ftjob.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: ftjob
{{- end }}

{{- define "ftjob.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "ftjob.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- required "serviceAccount.name is required when serviceAccount.create is false" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "ftjob.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}

{{- define "ftjob.trainerImage" -}}
{{- printf "%s:%s" .Values.trainer.image.repository (default .Chart.AppVersion .Values.trainer.image.tag) }}
{{- end }}

{{/* "true" when the replicas must elect an active one through kopf peering. */}}
{{- define "ftjob.peering" -}}
{{- if gt (int .Values.replicaCount) 1 }}true{{ end }}
{{- end }}

{{/* "true" when the operator watches every namespace (and gets a ClusterRole for it). */}}
{{- define "ftjob.clusterwide" -}}
{{- if not .Values.watchNamespaces }}true{{ end }}
{{- end }}

{{/*
Rules for the namespaces the operator works in: cluster-wide in a ClusterRole, or in a Role
per watched namespace. docs/rbac.md explains each rule; tests/unit/chart checks that they
match that page and cover every API call the operator's integration tests record.
*/}}
{{- define "ftjob.namespacedRules" -}}
# FineTuneJobs: the operator lists and watches them, deletes finished jobs after
# spec.ttlSecondsAfterFinished, and patches off the finalizer earlier operators put on them.
- apiGroups: ["finetune.dev"]
  resources: ["finetunejobs"]
  verbs: ["list", "watch", "patch", "delete"]
# get/patch on the status are also what each job's Role grants to its own pods; RBAC lets the
# operator grant only what it holds itself.
- apiGroups: ["finetune.dev"]
  resources: ["finetunejobs/status"]
  verbs: ["get", "patch"]
# Child objects carry ownerReferences with blockOwnerDeletion, which clusters with the
# OwnerReferencesPermissionEnforcement admission plugin allow only with this.
- apiGroups: ["finetune.dev"]
  resources: ["finetunejobs/finalizers"]
  verbs: ["update"]
# Training pods: created per attempt, watched, deleted as a gang on restart or suspend. `get`
# here and below: a create answered "already exists" reads the object to check its owner.
- apiGroups: [""]
  resources: ["pods"]
  verbs: ["get", "list", "watch", "create", "delete"]
# Checkpoint volume, headless rendezvous Service and the pods' ServiceAccount: created once
# per job; owned ones are removed by garbage collection with the job.
- apiGroups: [""]
  resources: ["persistentvolumeclaims", "services", "serviceaccounts"]
  verbs: ["get", "create"]
# The job ConfigMap holds the spec an attempt started with; the operator indexes them
# through a watch (filtered by label; RBAC cannot narrow list/watch by label) and patches one
# back when someone changed it (status.startedSpecDigest).
- apiGroups: [""]
  resources: ["configmaps"]
  verbs: ["get", "list", "watch", "create", "patch"]
# The Role and RoleBinding letting a job's pods report progress into its status.
- apiGroups: ["rbac.authorization.k8s.io"]
  resources: ["roles", "rolebindings"]
  verbs: ["get", "create"]
# Events on FineTuneJobs (kopf and the operator post them; core v1 API).
- apiGroups: [""]
  resources: ["events"]
  verbs: ["create"]
# Kueue: the Workload of a job with spec.scheduling.queueName (created, watched, set active
# or not) and its status (PodsReady, Finished, the quota given back after an eviction).
# Harmless without Kueue.
- apiGroups: ["kueue.x-k8s.io"]
  resources: ["workloads"]
  verbs: ["get", "list", "watch", "create", "patch"]
- apiGroups: ["kueue.x-k8s.io"]
  resources: ["workloads/status"]
  verbs: ["get", "patch"]
{{- if and (include "ftjob.peering" .) (not (include "ftjob.clusterwide" .)) }}
# kopf peering of the replicas, one KopfPeering per watched namespace.
- apiGroups: ["kopf.dev"]
  resources: ["kopfpeerings"]
  verbs: ["get", "list", "watch", "patch"]
{{- end }}
{{- end }}

{{/* Rules that are cluster-scoped whatever the watched namespaces are. */}}
{{- define "ftjob.clusterRules" -}}
# kopf discovers the FineTuneJob and peering resources and notices CRD changes.
- apiGroups: ["apiextensions.k8s.io"]
  resources: ["customresourcedefinitions"]
  verbs: ["get", "list", "watch"]
# The value of a queued job's PriorityClass goes into its Kueue Workload (spec.priority).
- apiGroups: ["scheduling.k8s.io"]
  resources: ["priorityclasses"]
  verbs: ["get"]
# The node labels and tolerations of the Kueue ResourceFlavors a job is admitted with go on
# its pods. Harmless without Kueue.
- apiGroups: ["kueue.x-k8s.io"]
  resources: ["resourceflavors"]
  verbs: ["list", "watch"]
{{- if include "ftjob.webhookSelfSigned" . }}
# The operator writes the CA of its self-signed webhook certificate into the chart's
# ValidatingWebhookConfiguration (that one object only).
- apiGroups: ["admissionregistration.k8s.io"]
  resources: ["validatingwebhookconfigurations"]
  verbs: ["get", "patch"]
  resourceNames: [{{ include "ftjob.fullname" . | quote }}]
{{- end }}
{{- if and .Values.webhook.enabled .Values.webhook.checkReferenceAccess }}
# The webhook asks whether a job's author may read what the job references and create pods
# (SubjectAccessReviews as that user; they are answered, not stored).
- apiGroups: ["authorization.k8s.io"]
  resources: ["subjectaccessreviews"]
  verbs: ["create"]
{{- end }}
{{- if not (include "ftjob.clusterwide" .) }}
# With a namespace list, kopf lists and watches namespaces to follow the listed ones being
# created or deleted.
- apiGroups: [""]
  resources: ["namespaces"]
  verbs: ["list", "watch"]
{{- else if include "ftjob.peering" . }}
# kopf peering of the replicas, one ClusterKopfPeering.
- apiGroups: ["kopf.dev"]
  resources: ["clusterkopfpeerings"]
  verbs: ["get", "list", "watch", "patch"]
{{- end }}
{{- end }}

{{/*
Names of the Secrets training pods pull their image with, comma-separated (FTJOB_TRAINER_IMAGE_PULL_SECRETS).
*/}}
{{- define "ftjob.trainerPullSecrets" -}}
{{- $names := list -}}
{{- range .Values.trainer.imagePullSecrets -}}
{{- $names = append $names .name -}}
{{- end -}}
{{- join "," $names -}}
{{- end -}}

{{- define "ftjob.webhookService" -}}
{{- include "ftjob.fullname" . }}-webhook
{{- end }}

{{/* The names the API server calls the webhook by (certificate SANs), comma-separated: the
URL's host, or the Service's DNS names. */}}
{{- define "ftjob.webhookHosts" -}}
{{- if .Values.webhook.url -}}
{{- (urlParse .Values.webhook.url).hostname -}}
{{- else -}}
{{- $svc := include "ftjob.webhookService" . -}}
{{- $ns := .Release.Namespace -}}
{{- printf "%s.%s.svc,%s.%s.svc.cluster.local,%s.%s,%s" $svc $ns $svc $ns $svc $ns $svc -}}
{{- end -}}
{{- end }}

{{/* "true" when the operator signs its own webhook certificate and publishes its CA. */}}
{{- define "ftjob.webhookSelfSigned" -}}
{{- if and .Values.webhook.enabled (eq .Values.webhook.certificates.source "self-signed") }}true{{ end }}
{{- end }}

{{/* The webhook's namespaceSelector: the value, else the watched namespaces, else none. */}}
{{- define "ftjob.webhookNamespaceSelector" -}}
{{- if .Values.webhook.namespaceSelector }}
{{- toYaml .Values.webhook.namespaceSelector }}
{{- else if .Values.watchNamespaces }}
matchExpressions:
  - key: kubernetes.io/metadata.name
    operator: In
    values:
      {{- toYaml .Values.watchNamespaces | nindent 6 }}
{{- end }}
{{- end }}
