# One tenant's own resources, the same ones GcpProvisioner creates from code: the tenant's
# dispatch topic "<dispatch>-<tenant>" with its dead-letter topic and that topic's
# subscription, a marker object at the tenant's prefix of the shared bucket, and (with
# tenant_identities) the tenant's service account with the bindings adapters/gcp/tenant_iam.py
# gives it. The tenant's Cloud Run job is made by CloudRunRuntime on its first start.
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

  # adapters.gcp.tenant_iam.service_account_id: sct-<slug, 17 at most>-<8 hex of SHA-256>
  account_slug   = trim(substr(replace(lower(var.tenant_id), "/[^a-z0-9]+/", "-"), 0, 17), "-")
  account_digest = substr(sha256(var.tenant_id), 0, 8)
  account_id     = local.account_slug == "" ? "sct-${local.account_digest}" : "sct-${local.account_slug}-${local.account_digest}"
  bucket_name    = "projects/_/buckets/${var.bucket}"
}

resource "google_service_account" "tenant" {
  count        = var.tenant_identities ? 1 : 0
  project      = var.project
  account_id   = local.account_id
  display_name = substr("skycrawl tenant ${var.tenant_id}", 0, 100)
  description  = "crawler containers of one skycrawl tenant"
}

locals {
  tenant_member = var.tenant_identities ? "serviceAccount:${google_service_account.tenant[0].email}" : ""
}

# Publish ready, progress and heartbeats to the inbox; dead-letter an undecodable message.
resource "google_pubsub_topic_iam_member" "tenant_publish" {
  for_each = var.tenant_identities ? {
    inbox        = "projects/${var.project}/topics/${var.inbox_topic}"
    dead_letters = google_pubsub_topic.dispatch_dlq.id
  } : {}

  project = var.project
  topic   = each.value
  role    = "roles/pubsub.publisher"
  member  = local.tenant_member
}

# Its own objects only; listing is checked on the bucket (names only: README "Tenants isolated").
resource "google_storage_bucket_iam_member" "tenant_objects" {
  count  = var.tenant_identities ? 1 : 0
  bucket = var.bucket
  role   = "roles/storage.objectAdmin"
  member = local.tenant_member

  condition {
    title       = "skycrawl-tenant-objects"
    description = "objects under tenants/${var.tenant_id}/ only"
    expression  = "resource.name.startsWith(\"${local.bucket_name}/objects/tenants/${var.tenant_id}/\")"
  }
}

resource "google_storage_bucket_iam_member" "tenant_listing" {
  count  = var.tenant_identities ? 1 : 0
  bucket = var.bucket
  role   = "roles/storage.objectViewer"
  member = local.tenant_member

  condition {
    title       = "skycrawl-tenant-listing"
    description = "list the bucket; object reads fail this condition"
    expression  = "resource.name == \"${local.bucket_name}\""
  }
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

# Without tenant identities the shared engines attach their own subscriptions to this
# tenant's topic (and no other); with them the conductor makes and grants each subscription.
resource "google_pubsub_topic_iam_member" "engine_dispatch" {
  count   = var.tenant_identities ? 0 : 1
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
