"""jaxviz: look inside convolutional networks with JAX.

torchvision's AlexNet, VGG and GoogLeNet run as Flax Linen modules (NHWC) with their
weights ported and checked against PyTorch layer by layer; every visualization is a
pure JAX function of ``(model, variables, x)``.

Example::

    import jaxviz as jv

    model, variables = jv.load("alexnet", weights=None)   # or "DEFAULT", or a file
    x = jv.data.preprocess(jv.data.sample_image("chelsea"))
    acts = jv.activations(model, variables, x, ["conv1", "features.10"])
    print(jv.render.summary(acts["conv1"]))
"""

from jaxviz import analysis as analysis
from jaxviz import checks as checks
from jaxviz import attribution as attribution
from jaxviz import cpu as cpu
from jaxviz import data as data
from jaxviz import errors as errors
from jaxviz import gpu as gpu
from jaxviz import models as models
from jaxviz import objectives as objectives
from jaxviz import parallel as parallel
from jaxviz import render as render
from jaxviz import rules as rules
from jaxviz import stream as stream
from jaxviz import switches as switches
from jaxviz import synthesis as synthesis
from jaxviz.capture import LayerInfo as LayerInfo
from jaxviz.capture import activations as activations
from jaxviz.capture import layer_names as layer_names
from jaxviz.models.loading import load as load
from jaxviz.models.bound import bind as bind
from jaxviz.errors import InputError as InputError
from jaxviz.errors import InputTypeError as InputTypeError
from jaxviz.errors import JaxvizError as JaxvizError
from jaxviz.errors import LayerError as LayerError
from jaxviz.errors import ModelError as ModelError
from jaxviz.errors import WeightsError as WeightsError

__version__ = "0.1.0"
