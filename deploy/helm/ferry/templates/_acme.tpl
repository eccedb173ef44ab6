{{- /*
ACME on ferry-scheduler (crates/scheduler/src/acme.rs): the FERRY_ACME_*
environment, secrets by reference only, and the optional root CA mount.
Nothing is rendered while scheduler.acme.directory is empty.
*/ -}}
{{- define "ferry.acmeRootCAPath" -}}/etc/ferry/acme/root-ca.pem{{- end }}

{{- define "ferry.acmeEnv" -}}
{{- $a := .Values.scheduler.acme }}
{{- if $a.directory }}
- name: FERRY_ACME_DIRECTORY
  value: {{ $a.directory | quote }}
{{- with $a.contact }}
- name: FERRY_ACME_CONTACT
  value: {{ . | quote }}
{{- end }}
{{- if $a.rootCA.secretName }}
- name: FERRY_ACME_ROOT_CA
  value: {{ include "ferry.acmeRootCAPath" . | quote }}
{{- end }}
- name: FERRY_ACME_DNS_PROVIDER
  value: {{ $a.dns.provider | quote }}
{{- if eq $a.dns.provider "cloudflare" }}
{{- $cf := $a.dns.cloudflare }}
{{- if not $cf.apiTokenSecretName }}
{{- fail "scheduler.acme.dns.cloudflare.apiTokenSecretName is required with scheduler.acme.dns.provider=cloudflare" }}
{{- end }}
- name: FERRY_ACME_CLOUDFLARE_API_TOKEN
  valueFrom:
    secretKeyRef:
      name: {{ $cf.apiTokenSecretName | quote }}
      key: {{ $cf.apiTokenSecretKey | quote }}
{{- with $cf.zoneId }}
- name: FERRY_ACME_CLOUDFLARE_ZONE_ID
  value: {{ . | quote }}
{{- end }}
{{- else if $a.dns.rfc2136.server }}
{{- $r := $a.dns.rfc2136 }}
{{- if not $r.zone }}
{{- fail "scheduler.acme.dns.rfc2136.zone is required with scheduler.acme.dns.rfc2136.server" }}
{{- end }}
- name: FERRY_ACME_DNS_SERVER
  value: {{ $r.server | quote }}
- name: FERRY_ACME_DNS_ZONE
  value: {{ $r.zone | quote }}
{{- if $r.tsigSecretName }}
- name: FERRY_ACME_DNS_TSIG_NAME
  value: {{ required "scheduler.acme.dns.rfc2136.tsigKeyName is required with a TSIG secret" $r.tsigKeyName | quote }}
- name: FERRY_ACME_DNS_TSIG_SECRET
  valueFrom:
    secretKeyRef:
      name: {{ $r.tsigSecretName | quote }}
      key: {{ $r.tsigSecretKey | quote }}
{{- end }}
{{- end }}
{{- end }}
{{- end }}

{{- define "ferry.acmeVolumeMounts" -}}
{{- $a := .Values.scheduler.acme }}
{{- if and $a.directory $a.rootCA.secretName }}
- name: acme-root-ca
  mountPath: {{ include "ferry.acmeRootCAPath" . }}
  subPath: {{ $a.rootCA.key }}
  readOnly: true
{{- end }}
{{- end }}

{{- define "ferry.acmeVolumes" -}}
{{- $a := .Values.scheduler.acme }}
{{- if and $a.directory $a.rootCA.secretName }}
- name: acme-root-ca
  secret:
    secretName: {{ $a.rootCA.secretName }}
    items:
      - key: {{ $a.rootCA.key }}
        path: {{ $a.rootCA.key }}
{{- end }}
{{- end }}
