"""`deployally agent`: carries out an engine's calls on this host's Docker engine, polling out to it."""
