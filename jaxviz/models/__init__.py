"""torchvision's AlexNet, VGG and GoogLeNet as Flax Linen modules, NHWC; and the small
models the project trains itself (LeNet, a 2-D MLP)."""

from jaxviz.models.alexnet import AlexNet as AlexNet
from jaxviz.models.bound import Bound as Bound
from jaxviz.models.bound import bind as bind
from jaxviz.models.googlenet import GoogLeNet as GoogLeNet
from jaxviz.models.googlenet import GoogLeNetOutputs as GoogLeNetOutputs
from jaxviz.models import small as small
from jaxviz.models.registry import ARCHITECTURES as ARCHITECTURES
from jaxviz.models.registry import BUNDLED as BUNDLED
from jaxviz.models.registry import TORCHVISION_ARCHITECTURES as TORCHVISION_ARCHITECTURES
from jaxviz.models.registry import architecture_of as architecture_of
from jaxviz.models.registry import create as create
from jaxviz.models.small import LeNet as LeNet
from jaxviz.models.small import MLP2d as MLP2d
from jaxviz.models.vgg import VGG as VGG
