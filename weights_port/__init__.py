"""torchvision AlexNet / VGG / GoogLeNet weights to jaxviz Flax variables, and weight files.

Example::

    import torchvision
    from weights_port import from_torchvision, save_weights

    model, variables = from_torchvision(torchvision.models.vgg16(weights="DEFAULT"))
    save_weights(variables, "vgg16.safetensors", model=model)

Command line: ``python -m weights_port vgg16 --weights DEFAULT -o vgg16.safetensors``.
torch is imported only by the functions that need it.
"""

from jaxviz.models.weights import WeightsError as WeightsError
from jaxviz.models.weights import load_weights as load_weights
from jaxviz.models.weights import save_weights as save_weights
from weights_port.convert import PRETRAINED_CONFIG as PRETRAINED_CONFIG
from weights_port.convert import convert_state_dict as convert_state_dict
from weights_port.convert import from_torchvision as from_torchvision
from weights_port.convert import load_pretrained as load_pretrained
from weights_port.convert import load_pth as load_pth
from weights_port.convert import pretrained_state_dict as pretrained_state_dict
from weights_port.convert import read_pth as read_pth
