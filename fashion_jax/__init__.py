"""fashion_jax: the Fashion-MNIST chapter in JAX/Flax."""

__version__ = "0.1.0"
