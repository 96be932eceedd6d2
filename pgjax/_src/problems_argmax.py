"""Old import path of the argmax-classifier problem; it lives in :mod:`pgjax._src.problems.classification`."""

from pgjax._src.problems.classification import argmax_accuracy
from pgjax._src.problems.classification import argmax_classifier
from pgjax._src.problems.classification import smoothed_argmax_accuracy
from pgjax._src.problems.classification import softmax_expected_reward
from pgjax._src.problems.classification import softmax_expected_reward_gradient

__all__ = ("argmax_accuracy", "argmax_classifier", "smoothed_argmax_accuracy", "softmax_expected_reward",
           "softmax_expected_reward_gradient")
