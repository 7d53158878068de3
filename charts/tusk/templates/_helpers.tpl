{{/* Common names and labels. */}}

{{- define "tusk.fullname" -}}
{{- if contains "tusk" .Release.Name -}}
{{- .Release.Name | trunc 50 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-tusk" .Release.Name | trunc 50 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "tusk.labels" -}}
app.kubernetes.io/name: tusk
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/part-of: tusk
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{- end -}}

{{- define "tusk.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}
