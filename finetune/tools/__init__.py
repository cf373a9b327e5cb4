"""Tools: commands built on the API (``demo``, ``lr-find``, ``augment-preview``).

Imports nothing eagerly: ``from finetune.tools.lrfind import lr_find``.
"""
