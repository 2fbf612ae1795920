"""`make demo` (`python -m demo`): the shop's story, then its resilience act."""
