"""Shared runtime of the Python services: config, server bootstrap, channels.

Each service stays a thin wiring of its own domain onto these pieces, so every
Python service starts, reports health, shuts down and fails the same way.
"""
