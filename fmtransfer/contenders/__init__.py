"""The ways to build task B's model, each one class, registered by name.

`compare`, `run` and `study` iterate over the contenders a config selects. To add one, write a
class (usually a subclass of `TransferFromA` with other phases, or of `PretrainedEncoder` with
its own `pretrain`) in a module here, decorate it with `@register`, and import the module below.

Example:
    >>> from fmtransfer.contenders import get, names
    >>> names()
    ('baseline', 'transfer', 'autoencoder', 'greedy')
    >>> get("transfer").title
    'transfer from A'
"""

from fmtransfer.contenders.base import (  # noqa: F401  (the package's API)
    Contender, ContenderResult, Phase, get, names, pretraining_methods, register,
)
from fmtransfer.contenders import scratch, transfer, pretrained  # noqa: F401,E402  (registers them)
