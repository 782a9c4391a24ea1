"""errors.check_choice: the one message every enumerated setting gives."""

import pytest

from cycada_tf import errors


def test_a_valid_choice_is_returned():
  valid = ('shorter', 'longer')
  assert errors.check_choice('--config.pixel.epoch_length', 'shorter', valid) == 'shorter'


def test_an_invalid_choice_names_the_flag_the_value_and_the_valid_ones():
  with pytest.raises(errors.UserError) as raised:
    errors.check_choice('--stage', 'bogus', ('source', 'pixel'), problem=' cannot be benchmarked')
  assert str(raised.value) == "--stage='bogus' cannot be benchmarked; valid: source, pixel."
