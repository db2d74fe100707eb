"""How the console reads an action's filters from a form or a JSON body."""
import pytest

from hueyscope.console.core import parse_params


def test_ids_of_failed_set_entries_are_numbers_from_a_list_or_a_string():
    assert parse_params("retry", {"ids": "3 4,5"})["ids"] == [3, 4, 5]
    assert parse_params("discard", {"ids": [1, "2"]})["ids"] == [1, 2]
    with pytest.raises(ValueError, match="whole numbers"):
        parse_params("retry", {"ids": "x"})


def test_task_ids_stay_text_and_empty_filters_are_none():
    params = parse_params("revoke", {"ids": "a-1 b-2", "task": "", "kind": ""})
    assert params == {"ids": ["a-1", "b-2"], "task": None, "fingerprint": None,
                      "kind": None, "since": None}


def test_since_takes_seconds_or_a_duration():
    assert parse_params("retry", {"since": 90})["since"] == 90.0
    assert parse_params("retry", {"since": "1h"})["since"] == 3600.0
    with pytest.raises(ValueError):
        parse_params("retry", {"since": "yesterday"})


@pytest.mark.parametrize("values", [{"ids": {"a": 1}}, {"task": ["x"]}])
def test_values_of_the_wrong_shape_are_refused(values):
    with pytest.raises(ValueError):
        parse_params("retry", values)
