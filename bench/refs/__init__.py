"""Reference endpoints the Tally figures are divided by (see bench/README.md)."""
