"""Analyses built on the models and the attribution and synthesis methods.

:mod:`~jaxviz.analysis.weights`: expanded weights between any two layers, a unit's top
connections, the first layer ordered by PCA, NMF of weights, and feature visualization
of weight directions (Olah et al., "Visualizing Weights", Distill 2020).
:mod:`~jaxviz.analysis.maps`: convolution filters as images, activation maps of one image
(before and after ReLU and pooling) with their statistics, and streamed histograms.
:mod:`~jaxviz.analysis.embeddings`: a population through each layer: pooled features,
PCA / t-SNE maps, k-NN accuracy per layer, scatter figures.
:mod:`~jaxviz.analysis.examples`: for every channel, the image patches that excite it
most over an image set (a running top-k), their receptive-field crops and DeconvNet
projections. :mod:`~jaxviz.analysis.receptive`: receptive fields (size, stride, offset)
of every layer, from the layer list. :mod:`~jaxviz.analysis.metrics`: how faithful a
saliency map is (deletion and insertion curves, the pointing game, the randomization
check) and a report over every attribution method.
:mod:`~jaxviz.analysis.adversarial`: adversarial examples (gradient ascent on the loss,
FGSM, PGD) and the random-sphere check.

``jv.analysis.expanded_weights``, ``jv.analysis.top_connections`` and
``jv.analysis.top_k`` are the public contract's names (docs/architecture.md) for the
functions of ``weights`` and ``examples``.
"""

from jaxviz.analysis import adversarial as adversarial
from jaxviz.analysis import embeddings as embeddings
from jaxviz.analysis import examples as examples
from jaxviz.analysis import maps as maps
from jaxviz.analysis import metrics as metrics
from jaxviz.analysis import receptive as receptive
from jaxviz.analysis import weights as weights
from jaxviz.analysis.examples import top_k as top_k
from jaxviz.analysis.weights import expanded_weights as expanded_weights
from jaxviz.analysis.weights import top_connections as top_connections
