"""`make bench`: latency of catalog GetProduct with tracing on and off."""
