"""Where checkpoints are read: Meta's ``.pt`` / ``.pth``, safetensors, transformers folders, hub ids.

- :mod:`~segmenter.checkpoints.read` — any source -> Meta's official state dict; config inference.
- :mod:`~segmenter.checkpoints.hub` — Hugging Face hub ids, download and cache look-up.
- :mod:`~segmenter.checkpoints.hf_keymap` — transformers' SAM 2 key names -> Meta's.
- :mod:`~segmenter.checkpoints.sam1` — SAM 1 layouts and input-size fitting.
"""
