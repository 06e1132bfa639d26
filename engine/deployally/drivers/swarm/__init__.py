"""The swarm driver: a Docker Swarm manager, each definition one of its services."""
