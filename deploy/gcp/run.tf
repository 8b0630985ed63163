# The crawler: one execution of this job per container (CloudRunRuntime passes the GUID and
# settings as per-execution environment overrides). Nothing runs, and nothing is billed,
# between executions.

resource "google_cloud_run_v2_job" "engine" {
  name                = "${var.prefix}-engine"
  location            = var.region
  deletion_protection = false

  template {
    task_count  = 1
    parallelism = 1

    template {
      max_retries     = 0
      timeout         = "86400s"
      service_account = google_service_account.engine.email

      containers {
        name  = "engine"
        image = var.engine_image

        resources {
          limits = {
            cpu    = var.engine_cpu
            memory = var.engine_memory
          }
        }

        env {
          name  = "SKYCRAWL_PROVIDER"
          value = "gcp"
        }

        env {
          name  = "SKYCRAWL_GCP_PROJECT"
          value = var.project
        }

        env {
          name  = "SKYCRAWL_GCP_BUCKET"
          value = google_storage_bucket.blobs.name
        }
      }
    }
  }

  depends_on = [google_project_service.apis]
}

resource "google_cloud_run_v2_job_iam_member" "functions" {
  name     = google_cloud_run_v2_job.engine.name
  location = var.region
  role     = "roles/run.developer"
  member   = "serviceAccount:${google_service_account.functions.email}"
}
