# Kill timers: HTTP tasks due at a time, aimed at the API function's /internal/timers.

resource "google_cloud_tasks_queue" "timers" {
  name     = "${var.prefix}-timers"
  location = var.region

  rate_limits {
    max_dispatches_per_second = 100
    max_concurrent_dispatches = 50
  }

  retry_config {
    max_attempts  = 50
    min_backoff   = "1s"
    max_backoff   = "60s"
    max_doublings = 5
  }

  depends_on = [google_project_service.apis]
}

resource "google_cloud_tasks_queue_iam_member" "functions" {
  for_each = toset(["roles/cloudtasks.enqueuer", "roles/cloudtasks.taskDeleter"])

  name     = google_cloud_tasks_queue.timers.name
  location = var.region
  role     = each.value
  member   = "serviceAccount:${google_service_account.functions.email}"
}
