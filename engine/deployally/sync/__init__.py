"""Sync: commits become recorded revisions, then plans carried out and recorded per server."""
