"""Training: the loop, resume state, freezing policy, optimizer and schedule, cached features,
processes, metrics and the run directory.

Imports nothing eagerly: ``from finetune.train.trainer import Trainer``.
"""
