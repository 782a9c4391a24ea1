"""errors.check_choice and errors.check_positive: the one message every enumerated setting
and every count gives."""

import numpy as np
import pytest

from cycada_tf import errors


def test_a_valid_choice_is_returned():
  valid = ('shorter', 'longer')
  assert errors.check_choice('--config.pixel.epoch_length', 'shorter', valid) == 'shorter'


def test_an_invalid_choice_names_the_flag_the_value_and_the_valid_ones():
  with pytest.raises(errors.UserError) as raised:
    errors.check_choice('--stage', 'bogus', ('source', 'pixel'), problem=' cannot be benchmarked')
  assert str(raised.value) == "--stage='bogus' cannot be benchmarked; valid: source, pixel."


@pytest.mark.parametrize('value', [1, 7])
def test_a_positive_count_is_returned(value):
  assert errors.check_positive('--steps', value) == value


@pytest.mark.parametrize('value', [0, -3, 2.5, True, None, '4'])
def test_a_count_below_one_or_not_whole_names_the_flag_and_the_value(value):
  with pytest.raises(errors.UserError) as raised:
    errors.check_positive('--samples', value, fix='pass --samples=8.')
  assert str(raised.value) == (f'--samples={value!r} must be a whole number of at least 1. '
                               'Fix: pass --samples=8.')


def test_a_numpy_integer_is_a_count():
  assert errors.check_positive('batch size', np.int64(32)) == 32
