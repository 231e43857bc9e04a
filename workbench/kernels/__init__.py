"""Kernel containers: their spec and launch, and the ZeroMQ client that speaks to them."""
