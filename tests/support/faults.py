"""Fault injection for the training loop: transformers callbacks that tests hand to ``train.trainer.run``."""

from __future__ import annotations

import sys
import time

import ray.cloudpickle
from transformers import TrainerCallback

# The callbacks travel to Ray Train's workers in train_loop_config: pickled by value, a worker need not be able to
# import this module (its sys.path holds the driver's working directory, not pytest's rootdir).
ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])


class FailOnce(TrainerCallback):
    """Raise once, after the checkpoint of step ``at`` was reported, on an attempt that started before that step.

    A worker gets a fresh copy on every attempt, so the callback decides from the trainer's state alone: an
    attempt that resumed from the step-``at`` checkpoint (or a later one) starts at ``global_step >= at`` and runs
    through; one that started from scratch fails at step ``at``.
    """

    def __init__(self, at: int):
        self.at = at
        self.armed = False

    def on_train_begin(self, args, state, control, **kwargs):
        self.armed = state.global_step < self.at  # the trainer state is restored before on_train_begin

    def on_step_begin(self, args, state, control, **kwargs):
        if self.armed and state.global_step >= self.at:
            time.sleep(2)  # let the controller take the checkpoint report first
            raise RuntimeError(f"injected failure after step {state.global_step}")
