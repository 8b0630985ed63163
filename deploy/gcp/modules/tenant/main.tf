# One tenant's own resources, the same ones GcpProvisioner creates from code: a Pub/Sub topic
# and pull subscription, and a marker object at the tenant's prefix of the shared bucket.
# Use it for tenants managed in Terraform; the API (POST /v1/tenants) does not need it.

terraform {
  required_providers {
    google = {
      source  = "hashicorp/google"
      version = ">= 6.0, < 8.0"
    }
  }
}

locals {
  name = "${var.prefix}${var.tenant_id}"
}

resource "google_pubsub_topic" "tenant" {
  project = var.project
  name    = local.name

  labels = {
    skycrawl-tenant = lower(var.tenant_id)
  }
}

resource "google_pubsub_subscription" "tenant" {
  project                    = var.project
  name                       = local.name
  topic                      = google_pubsub_topic.tenant.id
  ack_deadline_seconds       = 60
  message_retention_duration = "604800s"

  labels = {
    skycrawl-tenant = lower(var.tenant_id)
  }

  expiration_policy {
    ttl = ""
  }
}

resource "google_storage_bucket_object" "marker" {
  bucket       = var.bucket
  name         = "tenants/${var.tenant_id}/.tenant.json"
  content_type = "application/json"
  content      = jsonencode({ tenant_id = var.tenant_id, provisioned_by = "terraform" })
}
