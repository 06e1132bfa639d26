"""The REST API: thin aiohttp routes over the store and the drivers, and the JSON shapes they answer."""
