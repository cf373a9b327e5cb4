"""Models: loading backbones and weight files, new heads, stages, and peft adapters.

Imports nothing eagerly: ``from finetune.models.backbones import load_backbone``.
"""
