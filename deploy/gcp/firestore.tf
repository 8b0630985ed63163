# State: one collection group "<prefix>-<table>-items" per table (FirestoreStateStore).

resource "google_firestore_database" "state" {
  name                    = "(default)"
  location_id             = var.firestore_location
  type                    = "FIRESTORE_NATIVE"
  delete_protection_state = "DELETE_PROTECTION_ENABLED"

  depends_on = [google_project_service.apis]
}

# The item JSON is never queried: keep it out of the indexes (cheaper writes).
resource "google_firestore_field" "json_unindexed" {
  for_each = toset(local.tables)

  database   = google_firestore_database.state.name
  collection = "${local.collections}${each.value}-items"
  field      = "json"

  index_config {}
}

# Expired idempotency records and rate counters are deleted by Firestore (within ~a day;
# the store hides them at once).
resource "google_firestore_field" "ttl" {
  for_each = toset(local.expiring)

  database   = google_firestore_database.state.name
  collection = "${local.collections}${each.value}-items"
  field      = "expires_at"

  ttl_config {}

  depends_on = [google_firestore_field.json_unindexed]
}
