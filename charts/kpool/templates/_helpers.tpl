{{/* Chart name. */}}
{{- define "kpool.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Prefix of every resource name: the release name, plus the chart name unless contained. */}}
{{- define "kpool.fullname" -}}
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

{{- define "kpool.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Labels of every object. app.kubernetes.io/part-of=kpool is what the webhooks' objectSelector
excludes, so kpool's own pods are never sent to kpool.
*/}}
{{- define "kpool.labels" -}}
helm.sh/chart: {{ include "kpool.chart" . }}
app.kubernetes.io/name: {{ include "kpool.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: kpool
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/* Labels of one component (webhook, agent, certs): call with (list $ "webhook"). */}}
{{- define "kpool.componentLabels" -}}
{{- $root := index . 0 }}
{{- include "kpool.labels" $root }}
app.kubernetes.io/component: {{ index . 1 }}
{{- end }}

{{/* Selector labels of one component: call with (list $ "webhook"). */}}
{{- define "kpool.selectorLabels" -}}
{{- $root := index . 0 -}}
app.kubernetes.io/name: {{ include "kpool.name" $root }}
app.kubernetes.io/instance: {{ $root.Release.Name }}
app.kubernetes.io/component: {{ index . 1 }}
{{- end }}

{{/* The kpool image reference. */}}
{{- define "kpool.image" -}}
{{- $tag := default .Chart.AppVersion .Values.image.tag }}
{{- if .Values.image.digest }}
{{- printf "%s:%s@%s" .Values.image.repository $tag .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository $tag }}
{{- end }}
{{- end }}

{{/* Names. */}}
{{- define "kpool.webhookName" -}}{{ include "kpool.fullname" . }}-webhook{{- end }}
{{- define "kpool.agentName" -}}{{ include "kpool.fullname" . }}-agent{{- end }}
{{- define "kpool.certsName" -}}{{ include "kpool.fullname" . }}-certs{{- end }}
{{- define "kpool.policyName" -}}{{ include "kpool.fullname" . }}-policy{{- end }}
{{- define "kpool.meshControlPlaneName" -}}{{ include "kpool.fullname" . }}-mesh-control-plane{{- end }}
{{/* The Mutating and Validating webhook configurations share this name (kpool-certs patches both). */}}
{{- define "kpool.webhookConfigName" -}}{{ include "kpool.fullname" . }}-webhook{{- end }}
{{- define "kpool.tlsSecretName" -}}{{ include "kpool.fullname" . }}-webhook-tls{{- end }}
{{- define "kpool.caSecretName" -}}{{ include "kpool.fullname" . }}-webhook-tls-ca{{- end }}
{{- define "kpool.certificateName" -}}{{ include "kpool.fullname" . }}-webhook{{- end }}

{{- define "kpool.agentPriorityClassName" -}}
{{- if .Values.agent.priorityClass.systemNodeCritical }}
{{- "system-node-critical" }}
{{- else }}
{{- default (printf "%s-agent" (include "kpool.fullname" .)) .Values.agent.priorityClass.name }}
{{- end }}
{{- end }}

{{/*
The policy document as the webhook and the agent read it: values.policy, with the release
namespace added to guard.allowNamespaces, an empty readiness.probeImage set to the
chart's image, and guard.deleteAfterRefusals left out when 0 (never).
*/}}
{{- define "kpool.policy" -}}
{{- $policy := deepCopy .Values.policy }}
{{- $guard := default (dict) $policy.guard }}
{{- $allow := list .Release.Namespace }}
{{- range (default (list) $guard.allowNamespaces) }}
{{- $allow = append $allow . }}
{{- end }}
{{- $_ := set $guard "allowNamespaces" (uniq $allow) }}
{{- if not (hasKey $guard "allowServiceAccounts") }}
{{- $_ := set $guard "allowServiceAccounts" (list) }}
{{- end }}
{{- /* 0 in values means never; the policy leaves the field out for that. */}}
{{- if not $guard.deleteAfterRefusals }}
{{- $_ := unset $guard "deleteAfterRefusals" }}
{{- end }}
{{- $_ := set $policy "guard" $guard }}
{{- $readiness := default (dict) $policy.readiness }}
{{- if not $readiness.probeImage }}
{{- $_ := set $readiness "probeImage" (include "kpool.image" .) }}
{{- end }}
{{- $_ := set $policy "readiness" $readiness }}
{{- toYaml $policy }}
{{- end }}

{{/*
The policy of another Kubernetes cluster of the stretched Kafka cluster, as the mesh control
plane reads it: this release's policy with that cluster's name and broker id base (and broker
namespaces, when given). Call with (list $ peer), peer an entry of meshControlPlane.peerClusters.
*/}}
{{- define "kpool.meshPeerPolicy" -}}
{{- $root := index . 0 }}
{{- $peer := index . 1 }}
{{- $policy := include "kpool.policy" $root | fromYaml }}
{{- $_ := set $policy "cluster" $peer.cluster }}
{{- $brokers := deepCopy $policy.brokers }}
{{- $_ := set $brokers "idBase" ($peer.idBase | int) }}
{{- with $peer.namespaces }}
{{- $_ := set $brokers "namespaces" . }}
{{- end }}
{{- $_ := set $policy "brokers" $brokers }}
{{- toYaml $policy }}
{{- end }}

{{/* The policy's agent port. */}}
{{- define "kpool.agentPort" -}}
{{- $readiness := default (dict) .Values.policy.readiness }}
{{- default 8475 $readiness.agentPort | int }}
{{- end }}

{{/*
Namespaces no kpool webhook ever sees: kube-system, the release namespace, and
webhook.excludeNamespaces. Rendered as a YAML list.
*/}}
{{- define "kpool.excludedNamespaces" -}}
{{- $ns := list "kube-system" .Release.Namespace }}
{{- range .Values.webhook.excludeNamespaces }}
{{- $ns = append $ns . }}
{{- end }}
{{- toYaml (uniq $ns) }}
{{- end }}

{{/* Pod security context shared by every kpool pod (uid 65532, the image's user). */}}
{{- define "kpool.podSecurityContext" -}}
runAsNonRoot: true
runAsUser: 65532
runAsGroup: 65532
fsGroup: 65532
seccompProfile:
  type: RuntimeDefault
{{- end }}

{{/* Container security context shared by every kpool container. */}}
{{- define "kpool.containerSecurityContext" -}}
runAsNonRoot: true
runAsUser: 65532
runAsGroup: 65532
allowPrivilegeEscalation: false
privileged: false
readOnlyRootFilesystem: true
capabilities:
  drop: [ALL]
seccompProfile:
  type: RuntimeDefault
{{- end }}

{{/* The kpool-certs container, less name and args: call with the root context. */}}
{{- define "kpool.certsContainer" -}}
image: {{ include "kpool.image" . }}
imagePullPolicy: {{ .Values.image.pullPolicy }}
command: [/usr/local/bin/kpool-certs]
env:
  - name: KPOOL_LOG_FORMAT
    value: {{ .Values.webhook.logFormat | quote }}
  - name: KPOOL_LOG
    value: {{ .Values.webhook.logLevel | quote }}
resources:
  {{- toYaml .Values.certs.resources | nindent 2 }}
securityContext:
  {{- include "kpool.containerSecurityContext" . | nindent 2 }}
{{- end }}

{{/* `kpool-certs rotate` arguments, shared by the post-install/upgrade Job and the CronJob. */}}
{{- define "kpool.rotateArgs" -}}
- rotate
- --namespace={{ .Release.Namespace }}
- --secret={{ include "kpool.tlsSecretName" . }}
- --ca-secret={{ include "kpool.caSecretName" . }}
- --webhook={{ include "kpool.webhookConfigName" . }}
- --service={{ include "kpool.webhookName" . }}
- --days={{ .Values.certs.days | int }}
- --ca-days={{ .Values.certs.caDays | int }}
- --propagation-wait={{ .Values.certs.propagationWait }}
{{- end }}

{{/* Pod-level settings of every kpool-certs pod (the service account is set by each). */}}
{{- define "kpool.certsPodSettings" -}}
automountServiceAccountToken: true
restartPolicy: Never
enableServiceLinks: false
{{- with .Values.imagePullSecrets }}
imagePullSecrets:
  {{- toYaml . | nindent 2 }}
{{- end }}
securityContext:
  {{- include "kpool.podSecurityContext" . | nindent 2 }}
{{- end }}
