"""The self-hosted provider (DigitalOcean, Linode, any VM or cluster): PostgreSQL for the bus,
timers and state (``message_bus``, ``scheduler``, ``state_store``, ``host_limiter``, with
versioned SQL ``migrations``), files or an S3-compatible store for blobs (``blob_store``),
and subprocess, Docker or Kubernetes engines (``provider``). ``pip install
'skycrawl[selfhosted]'``; settings ``SKYCRAWL_SELFHOSTED_*`` (``settings``)."""
