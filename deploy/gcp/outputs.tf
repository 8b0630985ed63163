output "api_url" {
  description = "Base URL of the public API (POST /v1/crawls, ...)."
  value       = local.api_url
}

output "bucket" {
  description = "Bucket of pages, manifests and exports."
  value       = google_storage_bucket.blobs.name
}

output "engine_job" {
  description = "Cloud Run job whose executions are the crawler containers."
  value       = google_cloud_run_v2_job.engine.name
}

output "function_env" {
  description = "The environment both functions run with (for a local shell: export these)."
  value       = local.function_env
}
