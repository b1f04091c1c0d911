"""Analyses built on the models and the attribution and synthesis methods.

:mod:`~jaxviz.analysis.adversarial`: adversarial examples (gradient ascent on the loss,
FGSM, PGD) and the random-sphere check.
"""

from jaxviz.analysis import adversarial as adversarial
