{{/*
Names. The fullname is kept short because the operator derives `<fullname>-scheduler`,
`<fullname>-runner` and worker names from it (each must stay a DNS label, <= 63 chars).
*/}}
{{- define "lhcad.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 40 | trimSuffix "-" }}
{{- end }}

{{- define "lhcad.fullname" -}}
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

{{- define "lhcad.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "lhcad.selectorLabels" -}}
app.kubernetes.io/name: {{ include "lhcad.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "lhcad.labels" -}}
helm.sh/chart: {{ include "lhcad.chart" . }}
{{ include "lhcad.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{- define "lhcad.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}

{{/* The scheduler's in-cluster address; the operator names its Service `<cluster>-scheduler`. */}}
{{- define "lhcad.schedulerAddress" -}}
{{- printf "tcp://%s-scheduler.%s.svc.cluster.local:8786" (include "lhcad.fullname" .) .Release.Namespace }}
{{- end }}

{{- define "lhcad.claimName" -}}
{{- default (printf "%s-data" (include "lhcad.fullname" .)) .Values.storage.pvc.existingClaim }}
{{- end }}

{{/* Where store and workdir live: the PVC mount path or the object-store URL. */}}
{{- define "lhcad.storageBase" -}}
{{- if eq .Values.storage.type "objectStore" }}
{{- required "storage.objectStore.url is required when storage.type=objectStore" .Values.storage.objectStore.url | trimSuffix "/" }}
{{- else }}
{{- .Values.storage.pvc.mountPath | trimSuffix "/" }}
{{- end }}
{{- end }}

{{/*
The lhcad pipeline config mounted at /config/config.yaml: values.config with the cluster block
pointed at this release's scheduler and store/workdir defaulted from storage.
*/}}
{{- define "lhcad.pipelineConfig" -}}
{{- $cfg := deepCopy (.Values.config | default dict) }}
{{- $base := include "lhcad.storageBase" . }}
{{- if not (hasKey $cfg "store") }}
{{- $_ := set $cfg "store" (printf "%s/store.zarr" $base) }}
{{- end }}
{{- if not (hasKey $cfg "workdir") }}
{{- $_ := set $cfg "workdir" (printf "%s/results" $base) }}
{{- end }}
{{- $workers := int .Values.worker.replicas }}
{{- if .Values.gpuWorker.enabled }}
{{- $workers = add $workers (int .Values.gpuWorker.replicas) }}
{{- end }}
{{- $cluster := dict "type" "dask-address" "address" (include "lhcad.schedulerAddress" .) "workers" (max 1 $workers) "threads_per_worker" (int .Values.worker.threads) "timeout" (int .Values.job.connectTimeout) }}
{{- $_ := set $cfg "cluster" $cluster }}
{{- toYaml $cfg }}
{{- end }}

{{/* Environment shared by the runner and the workers (storage credentials, endpoint). */}}
{{- define "lhcad.storageEnv" -}}
{{- if and (eq .Values.storage.type "objectStore") .Values.storage.objectStore.endpoint }}
- name: AWS_ENDPOINT_URL
  value: {{ .Values.storage.objectStore.endpoint | quote }}
{{- end }}
{{- end }}

{{- define "lhcad.storageEnvFrom" -}}
{{- if and (eq .Values.storage.type "objectStore") .Values.storage.objectStore.secretName }}
envFrom:
  - secretRef:
      name: {{ .Values.storage.objectStore.secretName }}
{{- end }}
{{- end }}

{{- define "lhcad.storageVolumeMounts" -}}
- name: tmp
  mountPath: /tmp
{{- if eq .Values.storage.type "pvc" }}
- name: data
  mountPath: {{ .Values.storage.pvc.mountPath }}
{{- end }}
{{- end }}

{{- define "lhcad.storageVolumes" -}}
- name: tmp
  emptyDir: {}
{{- if eq .Values.storage.type "pvc" }}
- name: data
  persistentVolumeClaim:
    claimName: {{ include "lhcad.claimName" . }}
{{- end }}
{{- end }}

{{/* Pod-level settings shared by every pod (argument: dict root, place). */}}
{{- define "lhcad.podCommon" -}}
{{- $root := .root }}
{{- with $root.Values.imagePullSecrets }}
imagePullSecrets:
  {{- toYaml . | nindent 2 }}
{{- end }}
securityContext:
  {{- toYaml $root.Values.podSecurityContext | nindent 2 }}
{{- with .place.nodeSelector }}
nodeSelector:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .place.tolerations }}
tolerations:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .place.affinity }}
affinity:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end }}

{{/* The container that runs the pipeline. */}}
{{- define "lhcad.runnerContainer" -}}
- name: lhcad
  image: {{ include "lhcad.image" . }}
  imagePullPolicy: {{ .Values.image.pullPolicy }}
  command: ["lhcad"]
  args:
    - run
    - /config/config.yaml
    {{- range .Values.job.extraArgs }}
    - {{ . | quote }}
    {{- end }}
  {{- $env := include "lhcad.storageEnv" . | trim }}
  {{- if or $env .Values.job.extraEnv }}
  env:
    {{- with $env }}{{ . | nindent 4 }}{{ end }}
    {{- with .Values.job.extraEnv }}
    {{- toYaml . | nindent 4 }}
    {{- end }}
  {{- end }}
  {{- with (include "lhcad.storageEnvFrom" . | trim) }}{{ . | nindent 2 }}{{ end }}
  resources:
    {{- include "lhcad.resources" (dict "resources" .Values.job.resources "gpus" 0) | nindent 4 }}
  securityContext:
    {{- toYaml .Values.securityContext | nindent 4 }}
  volumeMounts:
    - name: config
      mountPath: /config
      readOnly: true
    {{- include "lhcad.storageVolumeMounts" . | nindent 4 }}
{{- end }}

{{/* Volumes of the runner pod. */}}
{{- define "lhcad.runnerVolumes" -}}
- name: config
  configMap:
    name: {{ include "lhcad.fullname" . }}-config
{{ include "lhcad.storageVolumes" . }}
{{- end }}

{{/*
A Dask worker container (argument: dict root, group (worker or gpuWorker values), gpu (bool),
address ("" = from DASK_SCHEDULER_ADDRESS, which the operator sets)).
*/}}
{{- define "lhcad.workerContainer" -}}
{{- $root := .root }}
- name: worker
  image: {{ include "lhcad.image" $root }}
  imagePullPolicy: {{ $root.Values.image.pullPolicy }}
  command: ["dask", "worker"]
  args:
    {{- if .address }}
    - {{ .address | quote }}
    {{- else }}
    - --name
    - $(DASK_WORKER_NAME)
    {{- end }}
    - --nthreads
    - {{ .group.threads | int | quote }}
    - --memory-limit
    - auto
    - --dashboard-address
    - "8788"
    {{- if .gpu }}
    - --resources
    - {{ printf "GPU=%d" (int .group.gpus) | quote }}
    {{- end }}
  ports:
    - name: http-dashboard
      containerPort: 8788
      protocol: TCP
  {{- $env := include "lhcad.storageEnv" $root | trim }}
  env:
    # glibc allocator settings for chunk-streaming workers (= lhcad.cluster.worker_environ();
    # tests/test_chart.py checks they agree). Dask's nanny overrides MALLOC_TRIM_THRESHOLD_ for its
    # worker; lhcad.cluster.tune_malloc sets it again at run time.
    - name: MALLOC_ARENA_MAX
      value: "1"
    - name: MALLOC_MMAP_THRESHOLD_
      value: "33554432"
    - name: MALLOC_TRIM_THRESHOLD_
      value: "1073741824"
    {{- with $env }}{{ . | nindent 4 }}{{ end }}
    {{- with $root.Values.worker.extraEnv }}
    {{- toYaml . | nindent 4 }}
    {{- end }}
  {{- with (include "lhcad.storageEnvFrom" $root | trim) }}{{ . | nindent 2 }}{{ end }}
  resources:
    {{- include "lhcad.resources" (dict "resources" .group.resources "gpus" (ternary .group.gpus 0 .gpu)) | nindent 4 }}
  securityContext:
    {{- toYaml $root.Values.securityContext | nindent 4 }}
  volumeMounts:
    {{- include "lhcad.storageVolumeMounts" $root | nindent 4 }}
{{- end }}

{{/* The scheduler container. */}}
{{- define "lhcad.schedulerContainer" -}}
- name: scheduler
  image: {{ include "lhcad.image" . }}
  imagePullPolicy: {{ .Values.image.pullPolicy }}
  command: ["dask", "scheduler"]
  args:
    - --port
    - "8786"
    - --dashboard-address
    - ":8787"
  ports:
    - name: tcp-comm
      containerPort: 8786
      protocol: TCP
    - name: http-dashboard
      containerPort: 8787
      protocol: TCP
  readinessProbe:
    httpGet:
      port: http-dashboard
      path: /health
    initialDelaySeconds: 5
    periodSeconds: 10
  livenessProbe:
    httpGet:
      port: http-dashboard
      path: /health
    initialDelaySeconds: 15
    periodSeconds: 20
  resources:
    {{- include "lhcad.resources" (dict "resources" .Values.scheduler.resources "gpus" 0) | nindent 4 }}
  securityContext:
    {{- toYaml .Values.securityContext | nindent 4 }}
{{- end }}

{{/* Service ports of the scheduler. */}}
{{- define "lhcad.schedulerPorts" -}}
- name: tcp-comm
  protocol: TCP
  port: 8786
  targetPort: tcp-comm
- name: http-dashboard
  protocol: TCP
  port: 8787
  targetPort: http-dashboard
{{- end }}

{{/*
Container resources with every quantity as a string: the operator's CRDs declare requests and
limits as strings (an integer such as `nvidia.com/gpu: 1` would be rejected by the API server).
Argument: dict resources (the values block), gpus (int, 0 = none).
*/}}
{{- define "lhcad.resources" -}}
{{- $out := dict }}
{{- range $section := list "requests" "limits" }}
{{- $q := dict }}
{{- range $k, $v := (get ($.resources | default dict) $section | default dict) }}
{{- $_ := set $q $k (toString $v) }}
{{- end }}
{{- if and (eq $section "limits") (gt (int $.gpus) 0) }}
{{- $_ := set $q "nvidia.com/gpu" (toString (int $.gpus)) }}
{{- end }}
{{- if $q }}
{{- $_ := set $out $section $q }}
{{- end }}
{{- end }}
{{- toYaml $out }}
{{- end }}
