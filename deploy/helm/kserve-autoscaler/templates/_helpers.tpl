{{/*
Labels on every object. The chart uses a deliberately small template subset (see
deploy/README.md): the tests render it without helm and compare it with deploy/manifests.
*/}}
{{- define "kserve-autoscaler.labels" -}}
app.kubernetes.io/name: kserve-autoscaler
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/component: controller
app.kubernetes.io/part-of: kserve-autoscaler
{{- end }}

{{/* The stable subset of the labels, for selectors (a Deployment's selector is immutable). */}}
{{- define "kserve-autoscaler.selectorLabels" -}}
app.kubernetes.io/name: kserve-autoscaler
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}
