"""The agent driver: a remote host's Docker engine, through the `deployally agent` polling this engine."""
