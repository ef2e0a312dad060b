"""Ablation grids: plan, run (local, GPUs, SLURM), resume, report; see docs/ablations.md."""
