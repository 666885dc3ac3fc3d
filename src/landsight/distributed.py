"""Where this process stands in a distributed launch (torchrun / torchelastic, SLURM).

Lightning's ``ddp_spawn`` (landsight's default for ``devices > 1`` on one machine) starts the
worker processes itself and only the launching process continues after training. Under
``torchrun`` or ``srun`` every process runs the whole command, so work done once per job
(writing the bundle, recording the MLflow run) must happen on global rank 0 only.
"""

from __future__ import annotations

import os


def launched_externally() -> bool:
    """True under torchrun / torchelastic or SLURM, where the training processes already exist."""
    return "TORCHELASTIC_RUN_ID" in os.environ or ("SLURM_NTASKS" in os.environ and "SLURM_JOB_NAME" in os.environ)


def global_rank() -> int:
    """This process's global rank: ``$RANK`` (torchrun) or ``$SLURM_PROCID``; 0 when not launched externally."""
    if not launched_externally():
        return 0
    return int(os.environ.get("RANK", os.environ.get("SLURM_PROCID", "0")))
