"""gomodel-proxy: a fast, lean AI gateway."""
__version__ = "0.1.0"
