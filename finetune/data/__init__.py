"""Data: reading images, scanning folders and manifests, caches, datasets, loaders, augmentation.

Imports nothing eagerly: ``from finetune.data.folder import scan_folder``.
"""
