# The conductor's inbox: a topic pushed to the conductor function, with a dead-letter topic
# whose pull subscription keeps what could not be handled. Each tenant's dispatch topic carries
# work to its containers; each container creates its own filtered subscription at start.

resource "google_pubsub_topic" "inbox" {
  name = local.inbox

  depends_on = [google_project_service.apis]
}

resource "google_pubsub_topic" "inbox_dlq" {
  name = "${local.inbox}-dlq"

  depends_on = [google_project_service.apis]
}

resource "google_pubsub_subscription" "inbox_dlq" {
  name                       = "${local.inbox}-dlq"
  topic                      = google_pubsub_topic.inbox_dlq.id
  ack_deadline_seconds       = 60
  message_retention_duration = "604800s"

  expiration_policy {
    ttl = ""
  }
}

resource "google_pubsub_subscription" "inbox" {
  name                 = local.inbox
  topic                = google_pubsub_topic.inbox.id
  ack_deadline_seconds = 120

  labels = {
    skycrawl-max-deliveries = "5"
  }

  push_config {
    push_endpoint = google_cloudfunctions2_function.conductor.service_config[0].uri

    oidc_token {
      service_account_email = google_service_account.invoker.email
      audience              = google_cloudfunctions2_function.conductor.service_config[0].uri
    }
  }

  dead_letter_policy {
    dead_letter_topic     = google_pubsub_topic.inbox_dlq.id
    max_delivery_attempts = 5
  }

  retry_policy {
    minimum_backoff = "1s"
    maximum_backoff = "60s"
  }

  expiration_policy {
    ttl = ""
  }
}

# Each tenant's dispatch topic "${local.dispatch}-<tenant>", its dead-letter topic and
# subscription, and the engines' right to attach subscriptions to it, come with the tenant
# (GcpProvisioner from code, or modules/tenant).

# Pub/Sub's agent publishes dead letters of the inbox.
resource "google_pubsub_topic_iam_member" "dead_letters" {
  topic  = google_pubsub_topic.inbox_dlq.id
  role   = "roles/pubsub.publisher"
  member = local.pubsub_agent
}

# Engines: publish to the inbox (tenants' own accounts get this from the provisioner).
resource "google_pubsub_topic_iam_member" "engine_inbox" {
  count  = var.tenant_identities ? 0 : 1
  topic  = google_pubsub_topic.inbox.id
  role   = "roles/pubsub.publisher"
  member = "serviceAccount:${google_service_account.engine.email}"
}
