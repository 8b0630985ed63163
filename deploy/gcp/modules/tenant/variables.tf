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

variable "prefix" {
  description = "Prefix of the tenant's topic and subscription (SKYCRAWL_GCP_TENANT_PREFIX)."
  type        = string
  default     = "skycrawl-tenant-"
}

variable "bucket" {
  description = "The shared blob bucket (output bucket of the shared stack)."
  type        = string
}
