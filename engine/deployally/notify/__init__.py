"""Notify: every event payload, its signature, and the sender that delivers the outbox."""
