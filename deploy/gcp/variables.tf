variable "project" {
  description = "Project id that holds every skycrawl resource."
  type        = string
}

variable "region" {
  description = "Region of the functions, the Cloud Run job, the Cloud Tasks queue and the bucket."
  type        = string
  default     = "us-central1"
}

variable "prefix" {
  description = "Prefix of every resource name (functions, job, topics, queue, service accounts)."
  type        = string
  default     = "skycrawl"
}

variable "engine_image" {
  description = "Engine image in Artifact Registry, e.g. us-central1-docker.pkg.dev/PROJECT/skycrawl/engine:0.1.0."
  type        = string
}

variable "source_dir" {
  description = "Staged function source (deploy/gcp/stage.sh writes it)."
  type        = string
  default     = "../../build/gcp-function"
}

variable "operator_key" {
  description = "Operator API key for /v1/tenants; stored in Secret Manager."
  type        = string
  sensitive   = true
}

variable "idle_ttl_s" {
  description = "Stop a crawler container this many seconds after its last work."
  type        = number
  default     = 60
}

variable "max_api_instances" {
  description = "Upper bound of API function instances."
  type        = number
  default     = 20
}

variable "max_conductor_instances" {
  description = "Upper bound of conductor function instances (each handles one push at a time)."
  type        = number
  default     = 20
}

variable "engine_cpu" {
  description = "vCPUs of one crawler container."
  type        = string
  default     = "1"
}

variable "engine_memory" {
  description = "Memory of one crawler container."
  type        = string
  default     = "1Gi"
}

variable "retention_days" {
  description = "Days after which crawl results under tenants/ are deleted (0: keep forever)."
  type        = number
  default     = 30
}

variable "tenant_identities" {
  description = "Run each tenant's containers as its own service account (SKYCRAWL_GCP_TENANT_IDENTITIES); false: one shared engine account."
  type        = bool
  default     = true
}

variable "firestore_location" {
  description = "Location of the Firestore database (a region or multi-region such as nam5)."
  type        = string
  default     = "nam5"
}
