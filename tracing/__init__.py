"""OpenTelemetry setup for the Python services, and a client of Jaeger's query API.

- ``tracing.provider``: ``configure_tracing`` (tracer provider, OTLP/gRPC batch
  export, W3C propagation; all settings from the standard OTEL_* variables).
- ``tracing.interceptors``: ``server_interceptors`` / ``client_interceptors``
  for grpc.aio, health and reflection left untraced.
- ``tracing.logs``: ``configure_logging``, JSON lines with trace_id / span_id.
- ``tracing.jaeger``: ``get_trace``, ``wait_for_trace``, ``format_tree``.
- ``python -m tracing <trace-id>`` prints a stored trace as a tree.

Nothing is imported here, so that the command line and the Jaeger client do
not pay for loading grpc and the OpenTelemetry SDK.
"""
