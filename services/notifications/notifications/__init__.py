"""The notifications service: order events from NATS JetStream become customer notifications."""

SERVICE_NAME = "notifications"
SERVICE_VERSION = "0.1.0"
