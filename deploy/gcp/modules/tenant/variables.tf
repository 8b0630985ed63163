variable "project" {
  description = "Project of the shared stack."
  type        = string
}

variable "tenant_id" {
  description = "Tenant id (1-64 letters, digits, _ or -), as stored by skycrawl."
  type        = string

  validation {
    condition     = can(regex("^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$", var.tenant_id))
    error_message = "tenant_id must be 1-64 letters, digits, _ or -, starting with a letter or digit."
  }
}

variable "dispatch_topic" {
  description = "Base name of the tenants' dispatch topics (SKYCRAWL_DISPATCH_TOPIC of the shared stack)."
  type        = string
  default     = "skycrawl-dispatch"
}

variable "pubsub_agent" {
  description = "Pub/Sub's service agent (serviceAccount:service-<number>@gcp-sa-pubsub.iam.gserviceaccount.com)."
  type        = string
}

variable "engine_service_account" {
  description = "E-mail of the engine job's service account (output of the shared stack); used only without tenant_identities."
  type        = string
  default     = ""
}

variable "inbox_topic" {
  description = "The conductor's inbox topic (SKYCRAWL_INBOX_QUEUE of the shared stack: <prefix>-inbox)."
  type        = string
  default     = "skycrawl-inbox"
}

variable "tenant_identities" {
  description = "Give the tenant its own service account (as the shared stack's tenant_identities)."
  type        = bool
  default     = true
}

variable "bucket" {
  description = "The shared blob bucket (output bucket of the shared stack)."
  type        = string
}
