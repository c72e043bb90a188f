"""The HTTP API: Starlette routes over the service, msgspec for JSON in and out.

`app.py` builds the application from the route table (`routes/`, one module per feature) and
answers errors with the error table (`errors.py`); `openapi.py` describes both. Nothing is
re-exported here: import from the module that holds a thing.
"""
