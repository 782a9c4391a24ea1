"""The one exception type meant for users.

Everything a user can get wrong (an unknown dataset, a missing earlier stage, an unprepared TFDS
dataset while offline, a corrupt image, a bad tensor at the serving signature) raises `UserError`
with a message that names the thing at fault and the fix. `train/main.py` catches it once, prints
it as one line and exits with code 2, so users never see a traceback from deep inside TF.
"""

import numbers


class UserError(Exception):
  """A problem with the user's input, with a message that says how to fix it."""


def check_choice(flag, value, valid, problem=''):
  """Returns `value` if it is one of `valid`, else raises the one-line UserError every
  enumerated setting gives: `{flag}={value!r}{problem}; valid: a, b.`"""
  if value not in valid:
    raise UserError(f'{flag}={value!r}{problem}; valid: {", ".join(valid)}.')
  return value


def check_positive(flag, value, fix=None):
  """Returns `value` if it is a whole number of at least 1, else raises the one-line UserError
  every count setting gives: `{flag}={value!r} must be a whole number of at least 1.` (bools
  are refused: `True` is an int to Python, never a count to a user; NumPy integers pass)."""
  if not isinstance(value, numbers.Integral) or isinstance(value, bool) or value < 1:
    fix = f' Fix: {fix}' if fix else ''
    raise UserError(f'{flag}={value!r} must be a whole number of at least 1.{fix}')
  return value
