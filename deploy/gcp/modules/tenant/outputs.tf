output "resources" {
  description = "The same references GcpProvisioner returns (a tenant's resources field)."
  value = {
    topic        = google_pubsub_topic.tenant.id
    subscription = google_pubsub_subscription.tenant.id
    marker       = "gs://${var.bucket}/${google_storage_bucket_object.marker.name}"
  }
}
