"""Thin HTTP and WebSocket handlers: parse, authorize, call the session manager, answer JSON."""
