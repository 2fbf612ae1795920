"""Local mode: the compose.yaml topology run as local processes.

`topology` reads compose.yaml (the single source of truth for names, ports
and environment), `processes` starts, waits for and stops the processes by
PID. Tests use the same code with free ports, so they never touch a stack
that `make up` started.
"""
