# One tenant's own resources, the same ones GcpProvisioner creates from code: the tenant's
# dispatch topic "<dispatch>-<tenant>" with its dead-letter topic and that topic's
# subscription, and a marker object at the tenant's prefix of the shared bucket.
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
  # core.layout.tenant_topic (ids that would make it longer than 72 characters are shortened
  # there with a hash: keep Terraform-managed tenant ids short)
  topic  = "${var.dispatch_topic}-${var.tenant_id}"
  labels = { skycrawl-tenant = lower(var.tenant_id) }
}

resource "google_pubsub_topic" "dispatch" {
  project = var.project
  name    = local.topic
  labels  = local.labels
}

resource "google_pubsub_topic" "dispatch_dlq" {
  project = var.project
  name    = "${local.topic}-dlq"
  labels  = local.labels
}

resource "google_pubsub_subscription" "dispatch_dlq" {
  project                    = var.project
  name                       = "${local.topic}-dlq"
  topic                      = google_pubsub_topic.dispatch_dlq.id
  ack_deadline_seconds       = 60
  message_retention_duration = "604800s"
  labels                     = local.labels

  expiration_policy {
    ttl = ""
  }
}

# Pub/Sub's agent publishes dead letters of the tenant's container subscriptions.
resource "google_pubsub_topic_iam_member" "dead_letters" {
  project = var.project
  topic   = google_pubsub_topic.dispatch_dlq.id
  role    = "roles/pubsub.publisher"
  member  = var.pubsub_agent
}

# The engines may attach their own subscriptions to this tenant's topic (and no other).
resource "google_pubsub_topic_iam_member" "engine_dispatch" {
  project = var.project
  topic   = google_pubsub_topic.dispatch.id
  role    = "roles/pubsub.subscriber"
  member  = "serviceAccount:${var.engine_service_account}"
}

resource "google_storage_bucket_object" "marker" {
  bucket       = var.bucket
  name         = "tenants/${var.tenant_id}/.tenant.json"
  content_type = "application/json"
  content      = jsonencode({ tenant_id = var.tenant_id, provisioned_by = "terraform" })
}
