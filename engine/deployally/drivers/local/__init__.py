"""The local driver: this host's Docker engine, through docker-py."""
