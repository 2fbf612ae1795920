"""The catalog service: products, prices and search, over gRPC."""

SERVICE_NAME = "catalog"
SERVICE_VERSION = "0.1.0"
