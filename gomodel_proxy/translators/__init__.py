"""Pure translations between the client-facing APIs and providers' native ones.

Each module maps requests and whole answers with plain functions and streams with a sans-I/O state
machine (bytes in, in any split; client bytes out), so each is tested by feeding recorded traffic.
"""
