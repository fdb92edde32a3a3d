"""`microgpt ablate`: the four designs (tie_lm_head × input_rmsnorm) on the same seeds.

`plan` (designs, settings, tasks) → `runner` (reuse saved runs, run the rest in `worker`
processes, `progress`) → `report` (`stats`: table, JSON, CSV) and `plot`; `cli` wires the flags.
"""
