{{- define "canary-proxy.name" -}}{{ .Release.Name }}-canary-proxy{{- end }}

{{- define "canary-proxy.labels" -}}
app.kubernetes.io/name: canary-proxy
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "canary-proxy.secret" -}}
{{- if .Values.adminExistingSecret }}{{ .Values.adminExistingSecret }}{{ else }}{{ include "canary-proxy.name" . }}-admin{{ end }}
{{- end }}

{{/* A TOML line per key of a map, each value written as JSON (valid TOML for strings,
     numbers, booleans and lists of them). */}}
{{- define "canary-proxy.toml-table" -}}
{{- range $k, $v := . }}{{ $k }} = {{ toJson $v }}
{{ end }}
{{- end }}
