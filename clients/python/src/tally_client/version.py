"""The version of this client, sent in `User-Agent`."""

__version__ = "0.1.0"
