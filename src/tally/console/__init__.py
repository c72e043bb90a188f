"""The web console at `/console`: a small browser app for the people who run a program.

It is a client of the public API like any other (`static/api.js` sends the key as
`Authorization: Bearer`, from the tab's sessionStorage); this package only serves its files
(`routes.py`). What the browser may load and run is `tally.http.security`'s `CONSOLE_POLICY`.
"""
