"""Wire formats, sans-I/O: SSE framing and what the gateway reads from providers' bodies and streams.

Nothing here touches a socket: bytes go in, bytes and facts come out, so every piece is tested by
feeding it recorded traffic split at any position.
"""
