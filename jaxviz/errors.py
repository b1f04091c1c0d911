"""The errors jaxviz raises, each a subclass of the builtin a caller already catches.

::

    JaxvizError                     catch-all for errors raised by jaxviz
    ├── InputError(ValueError)      an array or argument value is not what was expected:
    │                               wrong rank or layout (NCHW), channel count, empty batch,
    │                               NaN/inf, an index out of range, a size a layer can't take
    ├── InputTypeError(TypeError)   an argument of the wrong kind: an int array of pixels,
    │                               a target that is neither class nor objective
    ├── LayerError(KeyError,        a layer name the model does not have (the message
    │              ValueError)      lists the closest names)
    ├── ModelError(TypeError)       the model cannot do what was asked: no ``rules`` field
    │                               for a backward rule, no images for synthesis, variables
    │                               that do not fit it
    └── WeightsError(ValueError)    a weight file or state dict that does not fit

Every message says what was expected, what came and, where there is one, the fix.
``docs/errors.md`` lists the bad inputs we test and the error each one gets.
"""

from __future__ import annotations


class JaxvizError(Exception):
    """Base of every error jaxviz raises on purpose."""


class InputError(JaxvizError, ValueError):
    """An input's value does not fit: shape, layout, channels, emptiness, finiteness, range."""


class InputTypeError(JaxvizError, TypeError):
    """An input of the wrong kind (dtype, or a type the argument does not take)."""


class LayerError(JaxvizError, KeyError, ValueError):
    """A layer name the model does not have, or one it does not reach at this input size.

    A ``KeyError`` (as a lookup by name) and a ``ValueError``; ``str()`` is the message
    itself, not ``KeyError``'s quoted repr.
    """

    def __str__(self) -> str:
        return str(self.args[0]) if len(self.args) == 1 else super().__str__()


class ModelError(JaxvizError, TypeError):
    """The model cannot do what was asked (or its variables are not its own)."""


class WeightsError(JaxvizError, ValueError):
    """A weight file or state dict does not fit the model it is loaded into."""


__all__ = ["InputError", "InputTypeError", "JaxvizError", "LayerError", "ModelError",
           "WeightsError"]
