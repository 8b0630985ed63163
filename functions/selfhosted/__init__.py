"""Composition roots of the self-hosted provider (``skycrawl up --provider selfhosted``)."""
