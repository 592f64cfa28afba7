"""saat: Semantic-Aware Adversarial Training for reliable deep hashing retrieval.

The Python API mirrors the command line::

    import saat
    metrics = saat.train(dataset="fashion-mosaic", backbone="small_cnn", bits=32, out="runs/demo")
    metrics = saat.evaluate("runs/demo", topk=1000)
    metrics = saat.attack("runs/demo", method="mainstay", targeted=False)
    metrics = saat.defend("runs/demo", method="saat", out="runs/demo-saat")

Sub-packages: :mod:`saat.retrieval` (metrics), :mod:`saat.data`, :mod:`saat.models`, :mod:`saat.hashing`.
"""

from ._version import __version__


def train(*args, **kwargs):
    """Train a hashing model and write a run directory; see :func:`saat.pipelines.train.train`."""
    from .pipelines.train import train as _train

    return _train(*args, **kwargs)


def evaluate(*args, **kwargs):
    """Clean retrieval metrics of a run; see :func:`saat.pipelines.evaluate.evaluate`."""
    from .pipelines.evaluate import evaluate as _evaluate

    return _evaluate(*args, **kwargs)


def attack(*args, **kwargs):
    """Attack a run's queries; see :func:`saat.pipelines.attack.run_attack`."""
    from .pipelines.attack import run_attack

    return run_attack(*args, **kwargs)


def defend(*args, **kwargs):
    """Adversarially train a run's model; see :func:`saat.pipelines.defend.defend`."""
    from .pipelines.defend import defend as _defend

    return _defend(*args, **kwargs)


__all__ = ["__version__", "attack", "defend", "evaluate", "train"]
