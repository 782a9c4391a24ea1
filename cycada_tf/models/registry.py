"""Configs name networks by string; this is the one place that turns a name into a class."""

from cycada_tf import errors


def lookup(registry, name, kind, config_key):
  """`registry[name]`, or a UserError naming the valid choices and the config key to change."""
  if name not in registry:
    raise errors.UserError(
        f'unknown {kind} {name!r}; choose one of {sorted(registry)} ({config_key})')
  return registry[name]
