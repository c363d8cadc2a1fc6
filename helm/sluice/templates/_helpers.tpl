{{- define "sluice.name" -}}
{{- .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "sluice.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "sluice.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{ include "sluice.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end -}}

{{- define "sluice.selectorLabels" -}}
app.kubernetes.io/name: {{ include "sluice.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "sluice.secretName" -}}
{{- default (include "sluice.fullname" .) .Values.secret.existingSecret -}}
{{- end -}}

{{/* The config file: the values' keys plus what the chart itself sets. */}}
{{- define "sluice.config" -}}
{{- $config := deepCopy .Values.config -}}
{{- $_ := set $config "shutdown.grace-period" (printf "%ds" (int .Values.gracePeriodSeconds)) -}}
{{- $_ := set $config "handle.signing.key-file" "/etc/sluice/secret/handle-signing-key" -}}
{{- if .Values.tls.secretName -}}
{{- $_ := set $config "rpc.tls.cert-file" "/etc/sluice/tls/tls.crt" -}}
{{- $_ := set $config "rpc.tls.key-file" "/etc/sluice/tls/tls.key" -}}
{{- if .Values.tls.mutual -}}
{{- $_ := set $config "rpc.tls.client-ca-file" "/etc/sluice/tls/ca.crt" -}}
{{- end -}}
{{- else -}}
{{- $_ := set $config "rpc.plaintext" true -}}
{{- end -}}
{{- toYaml $config -}}
{{- end -}}
