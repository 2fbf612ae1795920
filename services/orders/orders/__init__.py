"""The orders service: PlaceOrder runs the checkout saga across inventory and payments."""

SERVICE_NAME = "orders"
SERVICE_VERSION = "0.1.0"
