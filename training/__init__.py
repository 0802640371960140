"""Builds the model the repository ships (``models/clawdbot-tiny-chat``): data, tokenizer, training, export.

Training-only code: it needs the ``train`` extra (torch, transformers, the two corpus packages); nothing in
``clawdbot`` imports it.
"""
