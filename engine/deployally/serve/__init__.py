"""Serve: the long-running engine process, its loops, its status and how hooks reach it."""
