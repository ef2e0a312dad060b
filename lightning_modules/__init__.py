"""Training stack: the generic :class:`ImageClassifier`, its optimizer/schedule factory and
the ``convnn`` command line (:func:`main`; ``convnn evaluate``)."""

from .classifier import ImageClassifier
from .optim import LRSchedule, build_optimizer

__all__ = ["ImageClassifier", "LRSchedule", "build_optimizer"]
