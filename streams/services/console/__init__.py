"""The segment console, served by `segstream api` at `/console` (see docs/console.md):
segments with their sizes over time, who is in them and why, and the rules validated,
previewed and published from one page."""
