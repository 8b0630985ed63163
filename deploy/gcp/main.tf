# skycrawl on Google Cloud: the shared stack. Per-tenant resources are created by the
# GcpProvisioner from code (or by modules/tenant for tenants managed here).

locals {
  api_url     = "https://${var.region}-${var.project}.cloudfunctions.net/${var.prefix}-api"
  timer_url   = "${local.api_url}/internal/timers"
  inbox       = "${var.prefix}-inbox"
  dispatch    = "${var.prefix}-dispatch"
  tables      = ["tenants", "api_keys", "crawls", "active", "containers", "fleets", "sessions", "idempotency", "rate"]
  expiring    = ["idempotency", "rate"]
  collections = "${var.prefix}-"

  apis = [
    "cloudbuild.googleapis.com",
    "cloudfunctions.googleapis.com",
    "cloudscheduler.googleapis.com",
    "cloudtasks.googleapis.com",
    "eventarc.googleapis.com",
    "firestore.googleapis.com",
    "pubsub.googleapis.com",
    "run.googleapis.com",
    "secretmanager.googleapis.com",
    "storage.googleapis.com",
  ]
}

data "google_project" "this" {}

resource "google_project_service" "apis" {
  for_each = toset(local.apis)

  service            = each.value
  disable_on_destroy = false
}

# --------------------------------------------------------------------------- identities

resource "google_service_account" "functions" {
  account_id   = "${var.prefix}-functions"
  display_name = "skycrawl API and conductor functions"
}

resource "google_service_account" "engine" {
  account_id   = "${var.prefix}-engine"
  display_name = "skycrawl crawler containers (Cloud Run job)"
}

resource "google_service_account" "invoker" {
  account_id   = "${var.prefix}-invoker"
  display_name = "skycrawl timers, housekeeping and inbox push (OIDC identity)"
}

# The engine creates and deletes its own dispatch subscription on its tenant's topic (which
# the GcpProvisioner creates at run time, hence project-wide: Pub/Sub has no IAM conditions on
# resource names, and one Cloud Run job runs every tenant's engines as one service account --
# see README "Tenants isolated" for what that leaves shared on GCP).
resource "google_project_iam_custom_role" "engine_subscriptions" {
  role_id     = "${replace(var.prefix, "-", "_")}_engine_subscriptions"
  title       = "skycrawl engine subscriptions"
  permissions = ["pubsub.subscriptions.create", "pubsub.subscriptions.delete", "pubsub.subscriptions.get", "pubsub.subscriptions.consume", "pubsub.topics.attachSubscription"]
}

resource "google_project_iam_member" "engine_subscriptions" {
  project = var.project
  role    = google_project_iam_custom_role.engine_subscriptions.id
  member  = "serviceAccount:${google_service_account.engine.email}"
}

# The conductor removes container subscriptions; the provisioner creates tenant topics.
resource "google_project_iam_member" "functions_pubsub" {
  project = var.project
  role    = "roles/pubsub.editor"
  member  = "serviceAccount:${google_service_account.functions.email}"
}

resource "google_project_iam_member" "functions_firestore" {
  project = var.project
  role    = "roles/datastore.user"
  member  = "serviceAccount:${google_service_account.functions.email}"
}

# Cloud Tasks mints the invoker's OIDC token for tasks the functions create.
resource "google_service_account_iam_member" "functions_act_as_invoker" {
  service_account_id = google_service_account.invoker.name
  role               = "roles/iam.serviceAccountUser"
  member             = "serviceAccount:${google_service_account.functions.email}"
}

# Running the job with overrides runs it as the engine's service account.
resource "google_service_account_iam_member" "functions_act_as_engine" {
  service_account_id = google_service_account.engine.name
  role               = "roles/iam.serviceAccountUser"
  member             = "serviceAccount:${google_service_account.functions.email}"
}

# The functions sign export URLs (V4) through IAM signBlob as themselves.
resource "google_service_account_iam_member" "functions_sign_as_themselves" {
  service_account_id = google_service_account.functions.name
  role               = "roles/iam.serviceAccountTokenCreator"
  member             = "serviceAccount:${google_service_account.functions.email}"
}

# Pub/Sub's own agent forwards dead letters and signs push requests.
locals {
  pubsub_agent = "serviceAccount:service-${data.google_project.this.number}@gcp-sa-pubsub.iam.gserviceaccount.com"
}

resource "google_project_iam_member" "pubsub_agent_subscriber" {
  project = var.project
  role    = "roles/pubsub.subscriber"
  member  = local.pubsub_agent
}

resource "google_project_iam_member" "pubsub_agent_token_creator" {
  project = var.project
  role    = "roles/iam.serviceAccountTokenCreator"
  member  = local.pubsub_agent
}
