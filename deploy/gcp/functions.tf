# Two 2nd-gen functions from one source: "api" (public HTTP; tenants use API keys, the
# /internal/* routes check Google OIDC tokens) and "conductor" (private; Pub/Sub pushes the
# inbox to it). Both scale to zero.

resource "google_secret_manager_secret" "operator_key" {
  secret_id = "${var.prefix}-operator-key"

  replication {
    auto {}
  }

  depends_on = [google_project_service.apis]
}

resource "google_secret_manager_secret_version" "operator_key" {
  secret      = google_secret_manager_secret.operator_key.id
  secret_data = var.operator_key
}

resource "google_secret_manager_secret_iam_member" "operator_key" {
  secret_id = google_secret_manager_secret.operator_key.id
  role      = "roles/secretmanager.secretAccessor"
  member    = "serviceAccount:${google_service_account.functions.email}"
}

locals {
  function_env = {
    SKYCRAWL_PROVIDER                  = "gcp"
    SKYCRAWL_INBOX_QUEUE               = local.inbox
    SKYCRAWL_DISPATCH_TOPIC            = local.dispatch
    SKYCRAWL_PUBLIC_BASE_URL           = local.api_url
    SKYCRAWL_ENGINE_IMAGE              = var.engine_image
    SKYCRAWL_IDLE_TTL_S                = tostring(var.idle_ttl_s)
    SKYCRAWL_EGRESSES                  = jsonencode([{ name = "gcp-${var.region}", runtime = "cloud-run", region = var.region }])
    SKYCRAWL_GCP_PROJECT               = var.project
    SKYCRAWL_GCP_REGION                = var.region
    SKYCRAWL_GCP_BUCKET                = google_storage_bucket.blobs.name
    SKYCRAWL_GCP_FIRESTORE_PREFIX      = local.collections
    SKYCRAWL_GCP_TASKS_QUEUE           = google_cloud_tasks_queue.timers.name
    SKYCRAWL_GCP_TIMER_URL             = local.timer_url
    SKYCRAWL_GCP_TIMER_SERVICE_ACCOUNT = google_service_account.invoker.email
    SKYCRAWL_GCP_OIDC_AUDIENCE         = local.api_url
    SKYCRAWL_GCP_RUN_JOB               = google_cloud_run_v2_job.engine.name
    SKYCRAWL_GCP_TENANT_IDENTITIES     = tostring(var.tenant_identities)
  }
}

resource "google_cloudfunctions2_function" "api" {
  name     = "${var.prefix}-api"
  location = var.region

  build_config {
    runtime     = "python311"
    entry_point = "api"

    source {
      storage_source {
        bucket = google_storage_bucket.source.name
        object = google_storage_bucket_object.source.name
      }
    }
  }

  service_config {
    min_instance_count               = 0
    max_instance_count               = var.max_api_instances
    max_instance_request_concurrency = 8
    available_cpu                    = "1"
    available_memory                 = "512Mi"
    timeout_seconds                  = 60
    service_account_email            = google_service_account.functions.email
    environment_variables            = local.function_env

    secret_environment_variables {
      key        = "SKYCRAWL_OPERATOR_KEY"
      project_id = var.project
      secret     = google_secret_manager_secret.operator_key.secret_id
      version    = "latest"
    }
  }

  depends_on = [google_secret_manager_secret_iam_member.operator_key]
}

resource "google_cloudfunctions2_function" "conductor" {
  name     = "${var.prefix}-conductor"
  location = var.region

  build_config {
    runtime     = "python311"
    entry_point = "conductor"

    source {
      storage_source {
        bucket = google_storage_bucket.source.name
        object = google_storage_bucket_object.source.name
      }
    }
  }

  service_config {
    min_instance_count    = 0
    max_instance_count    = var.max_conductor_instances
    available_memory      = "512Mi"
    timeout_seconds       = 120
    ingress_settings      = "ALLOW_ALL"
    service_account_email = google_service_account.functions.email
    environment_variables = local.function_env

    secret_environment_variables {
      key        = "SKYCRAWL_OPERATOR_KEY"
      project_id = var.project
      secret     = google_secret_manager_secret.operator_key.secret_id
      version    = "latest"
    }
  }

  depends_on = [google_secret_manager_secret_iam_member.operator_key]
}

# Anyone may reach the API (it authenticates every route itself) ...
resource "google_cloud_run_service_iam_member" "api_public" {
  location = var.region
  service  = google_cloudfunctions2_function.api.name
  role     = "roles/run.invoker"
  member   = "allUsers"
}

# ... only the invoker identity (Pub/Sub push) may reach the conductor.
resource "google_cloud_run_service_iam_member" "conductor_invoker" {
  location = var.region
  service  = google_cloudfunctions2_function.conductor.name
  role     = "roles/run.invoker"
  member   = "serviceAccount:${google_service_account.invoker.email}"
}

# Housekeeping every minute: reap, stop idle containers whose timer was lost, place backlogs.
resource "google_cloud_scheduler_job" "housekeeping" {
  name      = "${var.prefix}-housekeeping"
  region    = var.region
  schedule  = "* * * * *"
  time_zone = "Etc/UTC"

  http_target {
    uri         = "${local.api_url}/internal/housekeeping"
    http_method = "POST"

    oidc_token {
      service_account_email = google_service_account.invoker.email
      audience              = local.api_url
    }
  }

  retry_config {
    retry_count = 0
  }

  depends_on = [google_project_service.apis]
}
