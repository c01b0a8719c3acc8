"""Attack the run-time view names (``toolbus views set``): a name becomes a path segment and a KV key.

``VIEW_NAME_PATTERN`` ended in ``$``, which Python's re also matches before a final newline: a
view named ``"v\\n"`` passed ``check_view`` and would have become a NATS subject with a newline.
"""

from __future__ import annotations

import pytest

from stores.errors import InvalidName
from stores.view_store import check_view


@pytest.mark.parametrize("name", ["v\n", "v\r\n", "\nv", "v\n\n", "", "V", "v.w", "v w", "v" * 65, "-v"])
def test_a_view_name_that_is_no_path_segment_is_refused(name: str) -> None:
    with pytest.raises(InvalidName):
        check_view(name, ["kit_*"])


def test_a_plain_view_name_passes() -> None:
    check_view("calc-tools_2", ["calc_*"])
