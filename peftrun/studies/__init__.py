"""Studies: many runs, each an ordinary run directory.

- `sweep_file`: a sweep file (base config, set, grid × cases × seeds) → the run list, with stable,
  readable run names (no torch);
- `sweep`: validation of every point before anything runs, run states, the `sweep.json` manifest,
  and the driver that executes the runs and reports counts;
- `executors`: where runs execute: local worker processes (one per GPU, or N on a CPU) or Slurm
  through submitit; a run is always its own `peftrun train` process;
- `report` and `plots`: results tables (mean ± std over seeds, significance) and figures, read
  from run directories only.

Nothing here bypasses the single-run path, so what is proven for one run holds for each run of a
study.
"""
