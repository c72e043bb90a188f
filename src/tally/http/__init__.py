"""The HTTP API: Starlette routes over the service, msgspec for JSON in and out."""
