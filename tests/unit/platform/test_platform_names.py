"""Names people type: NFKC, no invisible characters, unique case-folded (pure)."""

from __future__ import annotations

import pytest

from aiforge.platform.domain.names import name_key, normalize_name


@pytest.mark.parametrize(
    "typed",
    [
        "a\x00b",  # NUL
        "a\x1bb",  # ESC
        "evil\u202egnp.exe",  # right-to-left override
        "a\u2066b\u2069",  # bidi isolates
        "ad\u200bmin",  # zero-width space
        "ad\u200dmin",  # zero-width joiner
        "\ufeffadmin",  # byte-order mark
        "a\u2028b",  # line separator
        "a\ue000b",  # private use
        "a\U000e0041b",  # tag character
    ],
)
def test_invisible_and_reordering_characters_are_refused(typed: str) -> None:
    with pytest.raises(ValueError, match="invisible"):
        normalize_name(typed)


def test_names_are_stored_in_nfkc_without_surrounding_space() -> None:
    assert normalize_name("  ＡＣＭＥ\u3000") == "ACME"
    assert normalize_name("e\u0301cole") == "\u00e9cole"
    assert normalize_name("ﬁle") == "file"


def test_empty_and_over_long_names_are_refused_after_normalizing() -> None:
    with pytest.raises(ValueError, match="empty"):
        normalize_name(" \t ")
    assert normalize_name("  ", allow_empty=True) == ""
    with pytest.raises(ValueError, match="at most 5"):
        normalize_name("\ufdfa", max_length=5)  # one character, 18 once normalized


def test_names_differing_only_by_case_or_width_share_a_key() -> None:
    keys = {name_key(normalize_name(name)) for name in ("Acme", "ACME", "ａｃｍｅ", "acme ")}
    assert keys == {"acme"}
    assert name_key("Straße") == name_key("STRASSE")
    assert name_key("acme") != name_key("acme2")
