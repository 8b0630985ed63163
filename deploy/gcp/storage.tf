resource "google_storage_bucket" "blobs" {
  name                        = "${var.project}-${var.prefix}-blobs"
  location                    = var.region
  uniform_bucket_level_access = true
  public_access_prevention    = "enforced"
  force_destroy               = false

  dynamic "lifecycle_rule" {
    for_each = var.retention_days > 0 ? [var.retention_days] : []

    content {
      condition {
        age            = lifecycle_rule.value
        matches_prefix = ["tenants/"]
      }

      action {
        type = "Delete"
      }
    }
  }

  depends_on = [google_project_service.apis]
}

resource "google_storage_bucket_iam_member" "blobs" {
  for_each = merge(
    { functions = google_service_account.functions.email },
    var.tenant_identities ? {} : { engine = google_service_account.engine.email },
  )

  bucket = google_storage_bucket.blobs.name
  role   = "roles/storage.objectAdmin"
  member = "serviceAccount:${each.value}"
}

# The provisioner adds and removes each tenant's conditional bindings on this bucket's policy.
resource "google_storage_bucket_iam_member" "functions_policy" {
  count  = var.tenant_identities ? 1 : 0
  bucket = google_storage_bucket.blobs.name
  role   = "roles/storage.admin"
  member = "serviceAccount:${google_service_account.functions.email}"
}

# The functions' source, uploaded as a zip of deploy/gcp/stage.sh's output.
resource "google_storage_bucket" "source" {
  name                        = "${var.project}-${var.prefix}-source"
  location                    = var.region
  uniform_bucket_level_access = true
  public_access_prevention    = "enforced"
  force_destroy               = true

  depends_on = [google_project_service.apis]
}

data "archive_file" "source" {
  type        = "zip"
  source_dir  = var.source_dir
  output_path = "${path.module}/.terraform/skycrawl-function.zip"
}

resource "google_storage_bucket_object" "source" {
  name   = "skycrawl-function-${data.archive_file.source.output_md5}.zip"
  bucket = google_storage_bucket.source.name
  source = data.archive_file.source.output_path
}
