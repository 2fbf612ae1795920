"""The gateway: the shop's one public gRPC entry.

It forwards calls for the routed public services byte for byte (routing,
authentication, per-caller rate limits and a JSON access log on the way) and
answers health and reflection itself.
"""

SERVICE_NAME = "gateway"
SERVICE_VERSION = "0.1.0"
