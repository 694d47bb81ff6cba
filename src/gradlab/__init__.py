"""gradlab: make vanishing and exploding gradients visible, measurable and explainable."""

__version__ = "0.1.0"
