{{/* Names and labels shared by every template. */}}

{{- define "modelfleet.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "modelfleet.serviceAccountName" -}}
{{- default (include "modelfleet.fullname" .) .Values.serviceAccount.name -}}
{{- end -}}

{{- define "modelfleet.selectorLabels" -}}
app.kubernetes.io/name: modelfleet-operator
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "modelfleet.labels" -}}
{{ include "modelfleet.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{- end -}}

{{- define "modelfleet.operatorImage" -}}
{{ .Values.operator.image.repository }}:{{ default .Chart.AppVersion .Values.operator.image.tag }}
{{- end -}}

{{- define "modelfleet.runtimeImage" -}}
{{ .Values.runtime.image.repository }}:{{ default .Chart.AppVersion .Values.runtime.image.tag }}
{{- end -}}
