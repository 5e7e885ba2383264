"""The ways to build task B's model, each one class, registered by name.

`compare`, `run` and `study` iterate over the contenders a config selects. To add one, write a
class (usually a subclass of `TransferFromA` with other phases, or of `PretrainedEncoder` with
its own `pretrain`) in a module here, decorate it with `@register`, and import the module below.

Example:
    >>> from fmtransfer.contenders import get, names
    >>> names()
    ('baseline', 'transfer', 'lp-ft', 'l2-sp', 'gradual', 'reinit', 'autoencoder', 'greedy', 'rbm', 'gan')
    >>> get("transfer").title
    'transfer from A'
"""

from fmtransfer.contenders.base import (
    Contender, ContenderResult, Phase, get, names, pretraining_methods, register,
)
from fmtransfer.contenders import scratch, transfer, finetune, pretrained, rbm, gan  # noqa: E402  (importing registers them)

__all__ = ["Contender", "ContenderResult", "Phase", "get", "names", "pretraining_methods", "register",
           "scratch", "transfer", "finetune", "pretrained", "rbm", "gan"]
