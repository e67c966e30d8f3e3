"""Studies: many runs, each an ordinary run directory.

- `sweep_file`: a sweep file (base config, set, grid × cases × seeds) → the run list, with stable,
  readable run names (no torch);
- `sweep`: validation of every point before anything runs, run states, the `sweep.json` manifest,
  and the driver that executes the runs and reports counts;
- `executors`: where runs execute: local worker processes (one per GPU, or N on a CPU) or Slurm
  through submitit; a run is always its own `peftrun train` process;
- `report`: collect finished, failed and missing runs, group them by what varies (seeds
  collapsed), mean ± std (n) per cell; `significance`: the best row against each other row (paired
  bootstrap pooled over shared seeds); `tables`: Markdown, CSV, LaTeX, JSON; `plots`: figures.
  All read run directories only.

Nothing here bypasses the single-run path, so what is proven for one run holds for each run of a
study.
"""
