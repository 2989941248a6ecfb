"""One module per chapter's study (what its notebook computes, and the verdicts it draws), each
registering its record in ``registry`` when imported; the thesis' code replay (``peer``), the
control runs, the pre-registered rows (``confirm``) and the profiles.  Importing this package
imports every module in it, so the registry is whole without a list of chapters.  Depends on
the layers below."""

import importlib
import pkgutil

for _module in pkgutil.iter_modules(__path__):
    importlib.import_module(f"{__name__}.{_module.name}")
