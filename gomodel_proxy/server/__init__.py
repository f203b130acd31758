"""The HTTP layer: aiohttp in and out, moving bytes between clients and providers."""
