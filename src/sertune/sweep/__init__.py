"""Sweeps: a grid of training runs from one YAML spec, run locally or on SLURM, resumable (docs/sweeps.md).

`spec` expands and validates a spec into cells, `run` plans the sweep directory and runs what is left,
`executors` say where tasks run, `caches` fills the shared frozen-feature caches, `status` reads states.
A cell is an ordinary run directory of `sertune train`: the sweep only plans, launches and reads runs.
"""
