"""Names people type: organization, project, user and key names, and e-mail addresses.

Pure. A name is stored as typed after NFKC normalization (so a full-width ``ＡＣＭＥ`` is
stored as ``ACME``) with surrounding white space removed; characters a reader cannot see
or that reorder text — control characters (NUL, escapes), format characters (bidi
overrides, zero-width joiners and spaces), line and paragraph separators, surrogates,
private-use and unassigned code points — are refused, so two names that look the same are
the same name. Uniqueness compares :func:`name_key`: the NFKC case-folded name, stored in
its own unique column, so ``Acme``, ``ACME`` and ``ａｃｍｅ`` cannot coexist.
"""

from __future__ import annotations

import unicodedata

REFUSED_CATEGORIES = frozenset({"Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp"})
"""Control, format, surrogate, private-use, unassigned; line and paragraph separators."""
NAME_KEY_MAX_LENGTH = 1024
"""The stored key's column width (NFKC and case folding can lengthen a name)."""


def _describe(char: str) -> str:
    name = unicodedata.name(char, "")
    return f"U+{ord(char):04X}" + (f" {name}" if name else "")


def normalize_name(value: str, *, max_length: int = 200, allow_empty: bool = False) -> str:
    """``value`` in NFKC with surrounding white space removed; raises ``ValueError`` (with
    a message safe to show) for an invisible or reordering character, an empty name (unless
    ``allow_empty``) or one longer than ``max_length`` once normalized."""
    name = unicodedata.normalize("NFKC", value).strip()
    for char in name:
        if unicodedata.category(char) in REFUSED_CATEGORIES:
            raise ValueError(
                f"must not contain control or invisible characters (found {_describe(char)})"
            )
    if not name and not allow_empty:
        raise ValueError("must not be empty or only white space")
    if len(name) > max_length:
        raise ValueError(f"must be at most {max_length} characters once normalized (NFKC)")
    if len(name_key(name)) > NAME_KEY_MAX_LENGTH:
        raise ValueError("is too long once case-folded")
    return name


def name_key(name: str) -> str:
    """What uniqueness compares: NFKC of the case-folded NFKC name (Unicode's
    ``NFKC_Casefold`` without its removal of ignorables, which are refused instead)."""
    return unicodedata.normalize("NFKC", unicodedata.normalize("NFKC", name).casefold())
