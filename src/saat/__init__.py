"""saat: Semantic-Aware Adversarial Training for reliable deep hashing retrieval."""

__version__ = "0.1.0"
