"""torchvision's AlexNet, VGG and GoogLeNet as Flax Linen modules, NHWC."""

from jaxviz.models.alexnet import AlexNet as AlexNet
from jaxviz.models.googlenet import GoogLeNet as GoogLeNet
from jaxviz.models.googlenet import GoogLeNetOutputs as GoogLeNetOutputs
from jaxviz.models.registry import ARCHITECTURES as ARCHITECTURES
from jaxviz.models.registry import architecture_of as architecture_of
from jaxviz.models.registry import create as create
from jaxviz.models.vgg import VGG as VGG
