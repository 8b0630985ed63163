output "resources" {
  description = "The same references GcpProvisioner returns (a tenant's resources field)."
  value = {
    dispatch_topic = google_pubsub_topic.dispatch.name
    marker         = "gs://${var.bucket}/${google_storage_bucket_object.marker.name}"
  }
}
