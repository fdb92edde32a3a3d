"""`microgpt ablate`: designs × numeric levels × seeds, compared paired by seed.

`plan` (designs, settings, tasks) → `runner` (reuse saved runs, run the rest in `worker`
processes, `progress`) → `analysis` (`stats`, `sweep`: summaries, comparisons) → `results`
(results.json written, read back and checked; results.csv) → `tables` (the report's rows) laid
out by `text` (the printed report) and `page` (report.html, with `plot`'s pictures; `microgpt
report DIR`); `cli` wires the flags.
"""
