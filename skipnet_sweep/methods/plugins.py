"""Methods from outside the package: ``--plugin MODULE_OR_FILE`` on ``run`` and ``train``.

A plugin is a Python module (importable by name, or a ``.py`` file by path) that registers
its methods on import (``register_method``). The driver loads it before reading the space
(its section is then a field like any other) and ships it to the Ray workers by value with
the plan, so the nodes need nothing installed for it.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
from collections.abc import Sequence
from pathlib import Path
from types import ModuleType

PLUGIN_FLAG = "--plugin"


class PluginError(ValueError):
    """A plugin that cannot be loaded; the message is one line."""


def load_plugin(spec: str) -> ModuleType:
    """Import the plugin ``spec``: a path to a ``.py`` file or a module name.

    Raises:
        PluginError: no such file or module, or the import failed (its first line).
    """
    try:
        if spec.endswith(".py"):
            path = Path(spec).resolve()
            if not path.is_file():
                raise PluginError(f"{PLUGIN_FLAG} {spec}: no such file")
            name = path.stem
            if name in sys.modules and getattr(sys.modules[name], "__file__", None) == str(path):
                return sys.modules[name]
            found = importlib.util.spec_from_file_location(name, path)
            module = importlib.util.module_from_spec(found)
            sys.modules[name] = module  # so its classes pickle by reference to a known module
            try:
                found.loader.exec_module(module)
            except BaseException:
                del sys.modules[name]
                raise
            return module
        return importlib.import_module(spec)
    except PluginError:
        raise
    except ModuleNotFoundError as err:
        raise PluginError(f"{PLUGIN_FLAG} {spec}: {err}") from None
    except Exception as err:
        first = (str(err).strip().splitlines() or [type(err).__name__])[0]
        raise PluginError(f"{PLUGIN_FLAG} {spec}: failed to import ({first})") from None


def plugin_specs(argv: Sequence[str]) -> list[str]:
    """The values of every ``--plugin X`` / ``--plugin=X`` in ``argv`` (read before the
    parser is built, so a plugin's phases and sections are known to it)."""
    specs = []
    for i, arg in enumerate(argv):
        if arg == PLUGIN_FLAG and i + 1 < len(argv):
            specs.append(argv[i + 1])
        elif arg.startswith(PLUGIN_FLAG + "="):
            specs.append(arg.split("=", 1)[1])
    return specs


def load_plugins(argv: Sequence[str]) -> None:
    """Load every plugin ``argv`` names (``plugin_specs``)."""
    for spec in plugin_specs(argv):
        load_plugin(spec)
