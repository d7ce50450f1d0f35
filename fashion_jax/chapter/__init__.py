"""The chapter's teaching modules: shape arithmetic of conv/pool layers, XOR, and entropy.

They explain the training library (fashion_jax's other modules) and are not part of it: nothing
in the library imports them.
"""
