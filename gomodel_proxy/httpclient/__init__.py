"""The gateway's own HTTP/1.1 client (the architecture's "httpclient: connection pooling").

aiohttp's ClientSession costs about 200 µs of CPU per proxied request; this client does the same job on
asyncio protocols and llhttp (httptools) for a fraction of that. ``HttpClient`` is the API; ``Response``
is what a request returns (it satisfies ``core.interfaces.UpstreamResponse``).
"""

from gomodel_proxy.httpclient.client import BodyStream, HttpClient, RequestBody, default_ssl_context, encode_headers
from gomodel_proxy.httpclient.response import Response

__all__ = ["BodyStream", "HttpClient", "RequestBody", "Response", "default_ssl_context", "encode_headers"]
