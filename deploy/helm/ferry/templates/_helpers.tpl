{{/* Names */}}
{{- define "ferry.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "ferry.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 40 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 40 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 40 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{/* "<fullname>-<component>"; call with (list $ "api") */}}
{{- define "ferry.componentName" -}}
{{- printf "%s-%s" (include "ferry.fullname" (index . 0)) (index . 1) -}}
{{- end -}}

{{/* Labels every object carries. */}}
{{- define "ferry.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
app.kubernetes.io/name: {{ include "ferry.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: ferry
{{- end -}}

{{/* Selector labels of a component; call with (list $ "api"). Never change
     these: Deployment selectors are immutable. */}}
{{- define "ferry.selectorLabels" -}}
{{- $root := index . 0 -}}
app.kubernetes.io/name: {{ include "ferry.name" $root }}
app.kubernetes.io/instance: {{ $root.Release.Name }}
app.kubernetes.io/component: {{ index . 1 }}
{{- end -}}

{{/* All labels of a component's objects and pods. */}}
{{- define "ferry.componentLabels" -}}
{{ include "ferry.labels" (index . 0) }}
app.kubernetes.io/component: {{ index . 1 }}
{{- end -}}

{{/* Image reference of a Ferry component; call with (list $ .Values.api.image).
     A digest wins over a tag. */}}
{{- define "ferry.image" -}}
{{- $root := index . 0 -}}
{{- $img := index . 1 -}}
{{- $registry := $img.registry | default $root.Values.image.registry -}}
{{- $repo := $img.repository -}}
{{- if $registry -}}{{- $repo = printf "%s/%s" $registry $img.repository -}}{{- end -}}
{{- if $img.digest -}}
{{- printf "%s@%s" $repo $img.digest -}}
{{- else -}}
{{- printf "%s:%s" $repo ($img.tag | default $root.Values.image.tag | default $root.Chart.AppVersion) -}}
{{- end -}}
{{- end -}}

{{/* ServiceAccount name of a component; call with (list $ "api"). */}}
{{- define "ferry.serviceAccountName" -}}
{{- $root := index . 0 -}}
{{- $sa := (index $root.Values (index . 1)).serviceAccount -}}
{{- if $sa.create -}}
{{- $sa.name | default (include "ferry.componentName" .) -}}
{{- else -}}
{{- $sa.name | default "default" -}}
{{- end -}}
{{- end -}}

{{/* Pod-level security context: every pod of the chart runs as uid/gid
     65532, never as root, with the runtime's default seccomp profile. */}}
{{- define "ferry.podSecurityContext" -}}
runAsNonRoot: true
runAsUser: 65532
runAsGroup: 65532
fsGroup: 65532
fsGroupChangePolicy: OnRootMismatch
seccompProfile:
  type: RuntimeDefault
{{- end -}}

{{/* Container-level security context: no privilege escalation, no
     capabilities, read-only root filesystem. */}}
{{- define "ferry.containerSecurityContext" -}}
runAsNonRoot: true
runAsUser: 65532
runAsGroup: 65532
allowPrivilegeEscalation: false
privileged: false
readOnlyRootFilesystem: true
capabilities:
  drop: ["ALL"]
seccompProfile:
  type: RuntimeDefault
{{- end -}}

{{/* Where each component's secrets live. */}}
{{- define "ferry.secretsName" -}}
{{- include "ferry.componentName" (list . "secrets") -}}
{{- end -}}

{{- define "ferry.encryptionSecretName" -}}
{{- .Values.encryption.existingSecret | default (include "ferry.secretsName" .) -}}
{{- end -}}

{{- define "ferry.encryptionSecretKey" -}}
{{- if .Values.encryption.existingSecret -}}{{ .Values.encryption.existingSecretKey }}{{- else -}}encryption-key{{- end -}}
{{- end -}}

{{- define "ferry.feedTokenSecretName" -}}
{{- .Values.proxyFeedToken.existingSecret | default (include "ferry.secretsName" .) -}}
{{- end -}}

{{- define "ferry.feedTokenSecretKey" -}}
{{- if .Values.proxyFeedToken.existingSecret -}}{{ .Values.proxyFeedToken.existingSecretKey }}{{- else -}}proxy-feed-token{{- end -}}
{{- end -}}

{{- define "ferry.builderTokenSecretName" -}}
{{- .Values.builderToken.existingSecret | default (include "ferry.secretsName" .) -}}
{{- end -}}

{{- define "ferry.builderTokenSecretKey" -}}
{{- if .Values.builderToken.existingSecret -}}{{ .Values.builderToken.existingSecretKey }}{{- else -}}builder-token{{- end -}}
{{- end -}}

{{/* FERRY_BUILDER_TOKEN, the service credential the api presents to the
     builder: the same Secret key on both sides. */}}
{{- define "ferry.builderTokenEnv" -}}
- name: FERRY_BUILDER_TOKEN
  valueFrom:
    secretKeyRef:
      name: {{ include "ferry.builderTokenSecretName" . }}
      key: {{ include "ferry.builderTokenSecretKey" . }}
{{- end -}}

{{/* In-cluster DNS name of a component's Service; call with (list $ "api"). */}}
{{- define "ferry.serviceHost" -}}
{{- $root := index . 0 -}}
{{- printf "%s.%s.svc.%s" (include "ferry.componentName" .) $root.Release.Namespace ($root.Values.clusterDomain | trimSuffix ".") -}}
{{- end -}}

{{/* The Service that carries the api's HTTP listener (push webhooks,
     /healthz): the api Service itself when it is a ClusterIP Service,
     else an internal one beside it, so the listener is never published. */}}
{{- define "ferry.apiHooksServiceName" -}}
{{- if eq .Values.api.service.type "ClusterIP" -}}
{{- include "ferry.componentName" (list . "api") -}}
{{- else -}}
{{- include "ferry.componentName" (list . "api-hooks") -}}
{{- end -}}
{{- end -}}

{{- define "ferry.apiHooksPort" -}}
- name: http-hooks
  port: {{ .Values.api.service.hooksPort }}
  targetPort: http-hooks
  protocol: TCP
  appProtocol: http
{{- end -}}

{{/* Fails the render on build settings the builder would refuse, or that
     would weaken the release namespace. */}}
{{- define "ferry.validateBuilds" -}}
{{- if eq .Values.builds.namespace .Release.Namespace -}}
{{- fail (printf "builds.namespace must not be the release namespace %q: build pods run unconfined (Pod Security privileged) there, and the builder may manage its Secrets" .Release.Namespace) -}}
{{- end -}}
{{- if and .Values.builds.registryAuthSecret (not .Values.builds.registry) -}}
{{- fail "builds.registryAuthSecret is set without builds.registry: the builder refuses a registry credential without a registry to push to" -}}
{{- end -}}
{{- end -}}

{{/* The Secret and key holding DATABASE_URL. */}}
{{- define "ferry.databaseSecretName" -}}
{{- if .Values.postgresql.enabled -}}
{{- include "ferry.componentName" (list . "postgresql") -}}
{{- else if .Values.database.existingSecret -}}
{{- .Values.database.existingSecret -}}
{{- else -}}
{{- include "ferry.componentName" (list . "database") -}}
{{- end -}}
{{- end -}}

{{- define "ferry.databaseSecretKey" -}}
{{- if and (not .Values.postgresql.enabled) .Values.database.existingSecret -}}
{{- .Values.database.existingSecretKey -}}
{{- else -}}
url
{{- end -}}
{{- end -}}

{{/* Fails the render on contradictory database settings. */}}
{{- define "ferry.validateDatabase" -}}
{{- if .Values.postgresql.enabled -}}
{{- if or .Values.database.url .Values.database.existingSecret -}}
{{- fail "database.url/database.existingSecret are set, but postgresql.enabled is true: set postgresql.enabled=false to use an external database" -}}
{{- end -}}
{{- else if not (or .Values.database.url .Values.database.existingSecret) -}}
{{- fail "postgresql.enabled is false: set database.existingSecret (preferred) or database.url" -}}
{{- end -}}
{{- end -}}

{{/* Environment every Ferry service shares (call with the root context). */}}
{{- define "ferry.commonEnv" -}}
- name: FERRY_LOG_FORMAT
  value: {{ .Values.logging.format | quote }}
- name: RUST_LOG
  value: {{ .Values.logging.filter | quote }}
{{- if .Values.otel.endpoint }}
- name: OTEL_EXPORTER_OTLP_ENDPOINT
  value: {{ .Values.otel.endpoint | quote }}
{{- end }}
{{- end -}}

{{/* DATABASE_URL and friends, from Secrets only. */}}
{{- define "ferry.databaseEnv" -}}
- name: DATABASE_URL
  valueFrom:
    secretKeyRef:
      name: {{ include "ferry.databaseSecretName" . }}
      key: {{ include "ferry.databaseSecretKey" . }}
{{- if .Values.database.ssl }}
- name: DATABASE_SSL
  value: "true"
{{- end }}
{{- if .Values.database.poolSize }}
- name: DATABASE_POOL_SIZE
  value: {{ .Values.database.poolSize | quote }}
{{- end }}
{{- end -}}

{{/* ENCRYPTION_KEY (and the previous keys during a rotation), from Secrets only. */}}
{{- define "ferry.encryptionEnv" -}}
- name: ENCRYPTION_KEY
  valueFrom:
    secretKeyRef:
      name: {{ include "ferry.encryptionSecretName" . }}
      key: {{ include "ferry.encryptionSecretKey" . }}
{{- if and .Values.encryption.existingSecret .Values.encryption.previousKeysSecretKey }}
- name: ENCRYPTION_KEY_PREVIOUS
  valueFrom:
    secretKeyRef:
      name: {{ .Values.encryption.existingSecret }}
      key: {{ .Values.encryption.previousKeysSecretKey }}
{{- end }}
{{- end -}}

{{/* Notification settings shared by ferry-api and ferry-scheduler. */}}
{{- define "ferry.notificationsEnv" -}}
- name: FERRY_NOTIFICATIONS_ALLOW_PRIVATE_TARGETS
  value: {{ .Values.notifications.allowPrivateTargets | quote }}
{{- if .Values.notifications.smtpCa.secretName }}
- name: FERRY_SMTP_CA_FILE
  value: /etc/ferry/smtp-ca/ca.crt
{{- end }}
{{- end -}}

{{/* The SMTP relay CA (notifications.smtpCa), when set: volume and mount. */}}
{{- define "ferry.smtpCaVolume" -}}
{{- if .Values.notifications.smtpCa.secretName }}
- name: smtp-ca
  secret:
    secretName: {{ .Values.notifications.smtpCa.secretName }}
    items:
      - key: {{ .Values.notifications.smtpCa.key }}
        path: ca.crt
{{- end }}
{{- end -}}

{{- define "ferry.smtpCaMount" -}}
{{- if .Values.notifications.smtpCa.secretName }}
- name: smtp-ca
  mountPath: /etc/ferry/smtp-ca
  readOnly: true
{{- end }}
{{- end -}}

{{/* Volumes and mounts for a writable /tmp under a read-only root. */}}
{{- define "ferry.tmpVolume" -}}
- name: tmp
  emptyDir:
    sizeLimit: 64Mi
{{- end -}}

{{- define "ferry.tmpMount" -}}
- name: tmp
  mountPath: /tmp
{{- end -}}

{{/* Scheduling fields of a component; call with (list $ .Values.api "api"). */}}
{{- define "ferry.scheduling" -}}
{{- $root := index . 0 -}}
{{- $c := index . 1 -}}
{{- with $c.priorityClassName }}
priorityClassName: {{ . }}
{{- end }}
{{- with $c.nodeSelector }}
nodeSelector:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with $c.tolerations }}
tolerations:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with $c.affinity }}
affinity:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with $c.topologySpreadConstraints }}
{{- $out := list }}
{{- range . }}
{{- $tsc := . }}
{{- if not $tsc.labelSelector }}
{{- $tsc = merge (dict "labelSelector" (dict "matchLabels" (include "ferry.selectorLabels" (list $root (index $ 2)) | fromYaml))) $tsc }}
{{- end }}
{{- $out = append $out $tsc }}
{{- end }}
topologySpreadConstraints:
  {{- toYaml $out | nindent 2 }}
{{- end }}
{{- end -}}

{{/* imagePullSecrets of every pod. */}}
{{- define "ferry.imagePullSecrets" -}}
{{- with .Values.imagePullSecrets }}
imagePullSecrets:
  {{- range . }}
  - name: {{ . }}
  {{- end }}
{{- end }}
{{- end -}}

{{/* A NetworkPolicy peer: this release's pods of a component; call with (list $ "api"). */}}
{{- define "ferry.peer" -}}
- podSelector:
    matchLabels:
      {{- include "ferry.selectorLabels" . | nindent 6 }}
{{- end -}}
