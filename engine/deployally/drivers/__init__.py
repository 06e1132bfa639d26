"""Drivers: the one seam between the engine and where instances run."""
