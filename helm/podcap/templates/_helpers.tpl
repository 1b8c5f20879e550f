{{- define "podcap.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "podcap.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- $name := include "podcap.name" . -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{/* part-of stays "podcap" whatever the names: the CLI finds the sensors by it. */}}
{{- define "podcap.labels" -}}
app.kubernetes.io/name: {{ include "podcap.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/part-of: podcap
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{/* The DaemonSet's selector, which an upgrade cannot change: part-of is in the pods'
     labels (podcap.labels), not here. */}}
{{- define "podcap.selectorLabels" -}}
app.kubernetes.io/name: {{ include "podcap.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: sensor
{{- end -}}

{{- define "podcap.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "podcap.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{- define "podcap.secretName" -}}
{{- default (printf "%s-token" (include "podcap.fullname" .)) .Values.api.existingSecret -}}
{{- end -}}

{{- define "podcap.secretKey" -}}
{{- if .Values.api.existingSecret }}{{ .Values.api.existingSecretKey }}{{ else }}token{{ end -}}
{{- end -}}

{{- define "podcap.adminSecretName" -}}
{{- default (printf "%s-admin-token" (include "podcap.fullname" .)) .Values.api.existingAdminSecret -}}
{{- end -}}

{{- define "podcap.adminSecretKey" -}}
{{- if .Values.api.existingAdminSecret }}{{ .Values.api.existingAdminSecretKey }}{{ else }}token{{ end -}}
{{- end -}}

{{/* The archive's URL: archive.url, else Kubeshark's tap.snapshots.cloud.* (s3, gcs, azblob). */}}
{{- define "podcap.archiveUrl" -}}
{{- $cloud := dig "snapshots" "cloud" dict .Values.tap -}}
{{- if .Values.archive.url -}}
{{- .Values.archive.url -}}
{{- else if eq ($cloud.provider | default "") "s3" -}}
{{- printf "s3://%s/%s" (required "tap.snapshots.cloud.s3.bucket: required with provider s3" (dig "s3" "bucket" "" $cloud)) ($cloud.prefix | default "") | trimSuffix "/" -}}
{{- else if eq ($cloud.provider | default "") "gcs" -}}
{{- printf "gs://%s/%s" (required "tap.snapshots.cloud.gcs.bucket: required with provider gcs" (dig "gcs" "bucket" "" $cloud)) ($cloud.prefix | default "") | trimSuffix "/" -}}
{{- else if eq ($cloud.provider | default "") "azblob" -}}
{{- printf "az://%s/%s" (required "tap.snapshots.cloud.azblob.container: required with provider azblob" (dig "azblob" "container" "" $cloud)) ($cloud.prefix | default "") | trimSuffix "/" -}}
{{- else if $cloud.provider -}}
{{- fail (printf "tap.snapshots.cloud.provider: %q is not one of s3, gcs, azblob" $cloud.provider) -}}
{{- end -}}
{{- end -}}

{{/* Kubeshark's static S3 keys become a Secret the chart makes. */}}
{{- define "podcap.archiveKeysSecret" -}}
{{- printf "%s-archive-keys" (include "podcap.fullname" .) -}}
{{- end -}}

{{- define "podcap.tlsSecretName" -}}
{{- default (printf "%s-tls" (include "podcap.fullname" .)) .Values.api.tls.existingSecret -}}
{{- end -}}

{{/* The store's size: Kubeshark's tap.capture.raw.storageSize when given, else
pcapdump.maxSize. */}}
{{- define "podcap.maxSize" -}}
{{- dig "capture" "raw" "storageSize" .Values.pcapdump.maxSize .Values.tap | toString -}}
{{- end -}}

{{/* Kubeshark's keys podcap cannot honour, refused by name with the reason. */}}
{{- define "podcap.checkKubesharkKeys" -}}
{{- if .Values.tap.persistentStorage -}}
{{- fail "tap.persistentStorage: podcap does not create a volume per sensor; use persistence.type hostPath (the default, kept across restarts) or persistentVolumeClaim with persistence.existingClaim (a ReadWriteMany claim)" -}}
{{- end -}}
{{- end -}}

{{/* The store's size ("500MB", "2GiB", "2Gi") as a Kubernetes quantity plus 20 %. */}}
{{- define "podcap.emptyDirLimit" -}}
{{- $size := include "podcap.maxSize" . -}}
{{- $number := regexFind "^[0-9]+" $size | atoi -}}
{{- $unit := trimPrefix (regexFind "^[0-9]+" $size) $size -}}
{{- /* unit → (kilo unit, how many of it in one unit) */ -}}
{{- $units := dict "KB" (list "k" 1) "MB" (list "k" 1000) "GB" (list "k" 1000000) "TB" (list "k" 1000000000) "KiB" (list "Ki" 1) "MiB" (list "Ki" 1024) "GiB" (list "Ki" 1048576) "TiB" (list "Ki" 1073741824) "Ki" (list "Ki" 1) "Mi" (list "Ki" 1024) "Gi" (list "Ki" 1048576) "Ti" (list "Ki" 1073741824) -}}
{{- if not (hasKey $units $unit) -}}
{{- fail (printf "pcapdump.maxSize: %q is not a size like 500MB or 2GiB" $size) -}}
{{- end -}}
{{- $u := get $units $unit -}}
{{- printf "%d%s" (div (mul $number (index $u 1) 12) 10) (index $u 0) -}}
{{- end -}}
