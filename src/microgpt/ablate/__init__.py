"""`microgpt ablate`: designs × numeric levels × seeds, compared paired by seed.

`plan` (designs, settings, tasks) → `runner` (reuse saved runs, run the rest in `worker`
processes, `progress`) → `report` (`stats`: table, JSON, CSV) → results.json, which `readback`
checks for `plot` and `page` (report.html; `microgpt report DIR`); `cli` wires the flags.
"""
