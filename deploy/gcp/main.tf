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
    "iam.googleapis.com",
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

# With tenant identities (the default) every tenant's containers run as the tenant's own
# service account, made with its bindings by the GcpProvisioner (adapters/gcp/tenant_iam.py),
# and this shared engine account holds nothing but its job. Without them (tenant_identities =
# false) the engine creates and deletes its own dispatch subscription on its tenant's topic,
# project-wide: Pub/Sub has no IAM conditions on resource names and one Cloud Run job runs
# every tenant's engines as one account (README "Tenants isolated").
resource "google_project_iam_custom_role" "engine_subscriptions" {
  count       = var.tenant_identities ? 0 : 1
  role_id     = "${replace(var.prefix, "-", "_")}_engine_subscriptions"
  title       = "skycrawl engine subscriptions"
  permissions = ["pubsub.subscriptions.create", "pubsub.subscriptions.delete", "pubsub.subscriptions.get", "pubsub.subscriptions.consume", "pubsub.topics.attachSubscription"]
}

resource "google_project_iam_member" "engine_subscriptions" {
  count   = var.tenant_identities ? 0 : 1
  project = var.project
  role    = google_project_iam_custom_role.engine_subscriptions[0].id
  member  = "serviceAccount:${google_service_account.engine.email}"
}

# The conductor creates (with tenant identities) and removes container subscriptions and
# grants each to its tenant's account; the provisioner creates tenant topics and their grants.
resource "google_project_iam_member" "functions_pubsub" {
  project = var.project
  role    = var.tenant_identities ? "roles/pubsub.admin" : "roles/pubsub.editor"
  member  = "serviceAccount:${google_service_account.functions.email}"
}

# Tenant identities: the provisioner creates and deletes the tenants' service accounts, the
# runtime creates each tenant's copy of the engine job and runs it as the tenant's account.
resource "google_project_iam_member" "functions_tenant_identities" {
  for_each = var.tenant_identities ? toset([
    "roles/iam.serviceAccountAdmin",
    "roles/iam.serviceAccountUser",
    "roles/run.developer",
  ]) : toset([])

  project = var.project
  role    = each.value
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
