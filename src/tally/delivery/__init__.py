"""Sending events to webhook endpoints (api.md section 8).

`dispatcher` runs the loop: it turns new events into deliveries, claims the attempts that are
due, makes them with bounded concurrency and records what came of them (through the service,
`tally.service.webhooks`, which owns every transaction). `sender` makes one HTTP attempt,
`signing` writes the Standard Webhooks headers, `addresses` refuses private addresses.
"""
