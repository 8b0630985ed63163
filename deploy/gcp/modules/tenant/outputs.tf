output "resources" {
  description = "The same references GcpProvisioner returns (a tenant's resources field)."
  value = merge(
    {
      dispatch_topic = google_pubsub_topic.dispatch.name
      marker         = "gs://${var.bucket}/${google_storage_bucket_object.marker.name}"
    },
    var.tenant_identities ? { engine_service_account = google_service_account.tenant[0].email } : {},
  )
}
