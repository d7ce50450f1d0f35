"""The chapter's teaching modules: shape arithmetic of conv/pool layers, XOR, and entropy.

They explain what the training library (fashion_jax's other modules) does and are not part of
it: no library module imports them; only the CLI's cli/commands/chapter.py does, to run them.
"""
