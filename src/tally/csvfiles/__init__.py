"""CSV files in and out: awards files to import (`awards`) and transactions exported
(`transactions`). Both the command line and the HTTP routes use them, so a file means the
same thing wherever it goes.

Cells a spreadsheet would run as a formula (text starting with `=`, `+`, `-` or `@`) are written
behind a single quote, and read back without it (`cells`).
"""
