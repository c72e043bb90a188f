"""The ledger's rules: what a change does to a member, decided by pure functions of values.

`lots` (spend order, what falls due, expiry dates), `points` (awards, spends, refunds,
cancellations, maturity and expiry as entries and accounts) and `rewards` (what a redemption
costs, stock, catalog changes). Each either returns the planned change or raises the error of
the rule it breaks; none reads or writes storage: `tally.service` loads, applies and saves.
"""
