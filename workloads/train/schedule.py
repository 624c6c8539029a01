"""The learning-rate schedule as a pure function of the step: linear warm-up, constant, then the final decay.

Being a function of the step alone, it needs no state of its own in a checkpoint: a resumed run recomputes it.
"""

from __future__ import annotations

import math

from interp_operator.api.saetrainingjob import LrScheduleSpec


def lr_factor(schedule: LrScheduleSpec, step: int, total_steps: int) -> float:
    """The multiplier of the peak learning rate at optimiser step ``step`` (0-based) of ``total_steps``."""
    factor = 1.0
    if schedule.warmup_steps and step < schedule.warmup_steps:
        factor = (step + 1) / schedule.warmup_steps
    decay_start = int(schedule.decay_start_fraction * total_steps)
    if schedule.decay != "none" and step >= decay_start and total_steps > decay_start:
        progress = (step - decay_start) / (total_steps - decay_start)
        shape = 1.0 - progress if schedule.decay == "linear" else 0.5 * (1.0 + math.cos(math.pi * progress))
        factor = min(factor, shape)
    return factor
