"""The mesh console: one web page with the live topology, per-edge RED figures,
breaker states, recent traces as waterfalls, and the run-time faults switch.

It reads only public interfaces (the services' Prometheus endpoints, their
gRPC health, Jaeger's query API, the fault file every service watches) and
keeps nothing but the previous scrape, from which it computes rates."""
