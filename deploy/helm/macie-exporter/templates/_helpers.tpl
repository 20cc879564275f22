{{/* The chart name, truncated to 63 characters (a DNS label). */}}
{{- define "macie-exporter.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* The release's full name: "<release>-<chart>", or the release name if it contains the chart name. */}}
{{- define "macie-exporter.fullname" -}}
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

{{- define "macie-exporter.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "macie-exporter.selectorLabels" -}}
app.kubernetes.io/name: {{ include "macie-exporter.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "macie-exporter.labels" -}}
helm.sh/chart: {{ include "macie-exporter.chart" . }}
{{ include "macie-exporter.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{- define "macie-exporter.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "macie-exporter.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "macie-exporter.image" -}}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}
{{- end }}

{{/* The name of the Secret holding the web config file. */}}
{{- define "macie-exporter.webConfigSecret" -}}
{{- default (printf "%s-web-config" (include "macie-exporter.fullname" .)) .Values.webConfig.existingSecret }}
{{- end }}

{{/* The number of shards: 1 runs the Deployment, more the StatefulSet. */}}
{{- define "macie-exporter.shards" -}}
{{- int .Values.sharding.shards }}
{{- end }}

{{/* "true" when sharding.shards is above 1 (the StatefulSet), empty otherwise. */}}
{{- define "macie-exporter.sharded" -}}
{{- if gt (int .Values.sharding.shards) 1 }}true{{ end }}
{{- end }}

{{/*
The StatefulSet's name, at most 52 characters: its pods carry the label
controller-revision-hash=<name>-<10 characters>, and a label value holds at most 63.
*/}}
{{- define "macie-exporter.statefulSetName" -}}
{{- include "macie-exporter.fullname" . | trunc 52 | trimSuffix "-" }}
{{- end }}

{{/* The headless Service that governs the StatefulSet (its serviceName). */}}
{{- define "macie-exporter.headlessServiceName" -}}
{{- printf "%s-headless" (include "macie-exporter.fullname" . | trunc 54 | trimSuffix "-") }}
{{- end }}

{{/* "true" when the chart renders a config file (config or discovery set), empty otherwise. */}}
{{- define "macie-exporter.hasConfigFile" -}}
{{- if or .Values.config .Values.discovery }}true{{ end }}
{{- end }}

{{/* The exporter's config file: `config`, with `discovery` as its discovery: section. */}}
{{- define "macie-exporter.configFile" -}}
{{- $config := deepCopy (default (dict) .Values.config) }}
{{- with .Values.discovery }}
{{- if hasKey $config "discovery" }}
{{- fail "set discovery either in `discovery` or in `config.discovery`, not both" }}
{{- end }}
{{- $_ := set $config "discovery" . }}
{{- end }}
{{- toYaml $config }}
{{- end }}

{{/*
Sharded mode takes --shard.index and --shard.total from the chart; the same settings given by
hand would contradict it.
*/}}
{{- define "macie-exporter.checkSharding" -}}
{{- if include "macie-exporter.sharded" . }}
{{- if not (semverCompare ">=1.28.0-0" .Capabilities.KubeVersion.Version) }}
{{- fail (printf "sharding.shards > 1 needs Kubernetes 1.28 or later (the apps.kubernetes.io/pod-index pod label), not %s" .Capabilities.KubeVersion.Version) }}
{{- end }}
{{- range .Values.extraArgs }}
{{- if hasPrefix "--shard." . }}
{{- fail (printf "extraArgs: %s: the chart sets --shard.* itself when sharding.shards > 1" .) }}
{{- end }}
{{- end }}
{{- range .Values.env }}
{{- if hasPrefix "MACIE_EXPORTER_SHARD_" (toString .name) }}
{{- fail (printf "env: %s: the chart sets the shard itself when sharding.shards > 1" .name) }}
{{- end }}
{{- end }}
{{- if and (kindIs "map" .Values.config) (hasKey .Values.config "shard") }}
{{- fail "config.shard: the chart sets the shard itself when sharding.shards > 1" }}
{{- end }}
{{- end }}
{{- end }}

{{/*
The pod template of the Deployment (one pod) and of the StatefulSet (one pod per shard): one
definition, so both run the same hardened pod. A StatefulSet pod takes its shard index from its
ordinal, which Kubernetes (1.28+) sets as the pod label apps.kubernetes.io/pod-index; the
downward API passes it in MACIE_EXPORTER_SHARD_INDEX, with no shell in the image.
No checksum annotation restarts the pods when the config file or the web config changes: both
are mounted as directories (never subPath, which the kubelet does not update), and the exporter
reloads them itself (the config file within 30 s of the kubelet's sync, the web config within
a second).
*/}}
{{- define "macie-exporter.podTemplate" -}}
{{- $sharded := include "macie-exporter.sharded" . -}}
{{- $hasConfigFile := include "macie-exporter.hasConfigFile" . -}}
metadata:
  labels:
    {{- include "macie-exporter.labels" . | nindent 4 }}
    {{- with .Values.podLabels }}
    {{- toYaml . | nindent 4 }}
    {{- end }}
  {{- with .Values.podAnnotations }}
  annotations:
    {{- toYaml . | nindent 4 }}
  {{- end }}
spec:
  serviceAccountName: {{ include "macie-exporter.serviceAccountName" . }}
  automountServiceAccountToken: {{ .Values.automountServiceAccountToken }}
  {{- with .Values.imagePullSecrets }}
  imagePullSecrets:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- with .Values.priorityClassName }}
  priorityClassName: {{ . }}
  {{- end }}
  securityContext:
    {{- toYaml .Values.podSecurityContext | nindent 4 }}
  containers:
    - name: macie-exporter
      image: {{ include "macie-exporter.image" . | quote }}
      imagePullPolicy: {{ .Values.image.pullPolicy }}
      args:
        - --web.listen-address=:9729
        - --web.telemetry-path={{ .Values.telemetryPath }}
        {{- if $hasConfigFile }}
        - --config.file=/etc/macie-exporter/config/config.yml
        {{- end }}
        {{- if .Values.webConfig.enabled }}
        - --web.config.file=/etc/macie-exporter/web/web-config.yml
        {{- end }}
        {{- if $sharded }}
        - --shard.total={{ include "macie-exporter.shards" . }}
        {{- end }}
        {{- range .Values.extraArgs }}
        - {{ . | quote }}
        {{- end }}
      {{- if or $sharded .Values.env }}
      env:
        {{- if $sharded }}
        - name: MACIE_EXPORTER_SHARD_INDEX
          valueFrom:
            fieldRef:
              fieldPath: metadata.labels['apps.kubernetes.io/pod-index']
        {{- end }}
        {{- with .Values.env }}
        {{- toYaml . | nindent 8 }}
        {{- end }}
      {{- end }}
      {{- with .Values.envFrom }}
      envFrom:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      ports:
        - name: http
          containerPort: 9729
          protocol: TCP
      livenessProbe:
        httpGet:
          path: /healthz
          port: http
          scheme: {{ .Values.webConfig.scheme }}
        {{- toYaml .Values.livenessProbe | nindent 8 }}
      readinessProbe:
        httpGet:
          path: /readyz
          port: http
          scheme: {{ .Values.webConfig.scheme }}
        {{- toYaml .Values.readinessProbe | nindent 8 }}
      securityContext:
        {{- toYaml .Values.securityContext | nindent 8 }}
      {{- with .Values.resources }}
      resources:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      volumeMounts:
        - name: tmp
          mountPath: /tmp
        {{- if $hasConfigFile }}
        - name: config
          mountPath: /etc/macie-exporter/config
          readOnly: true
        {{- end }}
        {{- if .Values.webConfig.enabled }}
        - name: web-config
          mountPath: /etc/macie-exporter/web
          readOnly: true
        {{- end }}
        {{- with .Values.extraVolumeMounts }}
        {{- toYaml . | nindent 8 }}
        {{- end }}
  volumes:
    - name: tmp
      emptyDir:
        sizeLimit: 16Mi
    {{- if $hasConfigFile }}
    - name: config
      configMap:
        name: {{ include "macie-exporter.fullname" . }}
    {{- end }}
    {{- if .Values.webConfig.enabled }}
    - name: web-config
      secret:
        secretName: {{ include "macie-exporter.webConfigSecret" . }}
    {{- end }}
    {{- with .Values.extraVolumes }}
    {{- toYaml . | nindent 4 }}
    {{- end }}
  {{- with .Values.nodeSelector }}
  nodeSelector:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- with .Values.affinity }}
  affinity:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- with .Values.tolerations }}
  tolerations:
    {{- toYaml . | nindent 4 }}
  {{- end }}
{{- end }}
