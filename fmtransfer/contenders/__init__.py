"""The ways to build task B's model, each one class, registered by name.

`compare`, `run` and `study` iterate over the contenders a config selects (`select`). To add one,
write a module here (or an installed package: the `fmtransfer.contenders` entry point) with a
class, usually a subclass of `TransferFromA` with other phases or of `PretrainedEncoder` with its
own `pretrain`, and its settings as a nested `Settings` section; decorate it with `@register`.
Every module of this package is imported here, so a new file is found without an edit.

Example:
    >>> from fmtransfer.contenders import get, names
    >>> names()
    ('baseline', 'transfer', 'lp-ft', 'l2-sp', 'gradual', 'reinit', 'autoencoder', 'greedy', 'rbm', 'gan')
    >>> get("transfer").title
    'transfer from A'
"""

import importlib
import pkgutil

from fmtransfer.contenders.base import (
    Contender, ContenderResult, Phase, check, checked_fit, checked_result, failed, get, load_plugins, names,
    pretraining_method, pretraining_methods, register, sections_read, select, smoke, trial_settings, unregister,
)

# Importing a module registers the contenders it defines; the order of `names()` is their `order`.
for _module in pkgutil.iter_modules(__path__):
    importlib.import_module(f"{__name__}.{_module.name}")
del _module

__all__ = ["Contender", "ContenderResult", "Phase", "check", "checked_fit", "checked_result", "failed", "get",
           "load_plugins", "names", "pretraining_method", "pretraining_methods", "register", "sections_read",
           "select", "smoke", "trial_settings", "unregister"]
