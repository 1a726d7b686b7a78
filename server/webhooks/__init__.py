"""Inbound provider webhooks: check the signature (`verify`), normalise the payload (`parse`), apply the
events to messages (`service`), share transactions between concurrent deliveries (`ingest`), and serve
`/webhooks/{provider_id}` (`api`)."""
