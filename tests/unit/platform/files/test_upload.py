"""The streaming multipart reader: the file's bytes come out as they are parsed, counted
against the limit, and every malformed body is an ``UploadError``."""

from __future__ import annotations

import pytest

from aiforge.platform.files.upload import (
    MAX_FIELD_BYTES,
    UploadError,
    UploadForm,
    UploadTooLarge,
    boundary_of,
)

BOUNDARY = b"xyz"


def _body(*parts: tuple[str, bytes, str | None]) -> bytes:
    out = b""
    for name, data, filename in parts:
        disposition = f'form-data; name="{name}"'
        if filename is not None:
            disposition += f'; filename="{filename}"'
        out += b"--xyz\r\nContent-Disposition: " + disposition.encode() + b"\r\n\r\n"
        out += data + b"\r\n"
    return out + b"--xyz--\r\n"


def _read(body: bytes, *, limit: int = 1000, chunk: int = 7) -> tuple[UploadForm, bytes]:
    form = UploadForm(BOUNDARY, max_file_bytes=limit)
    data = b""
    for start in range(0, len(body), chunk):
        form.feed(body[start : start + chunk])
        data += b"".join(form.take_file_data())
    form.finish()
    return form, data


def test_the_file_and_fields_are_read_in_small_chunks() -> None:
    content = b'{"a": 1}\n' * 20
    form, data = _read(_body(("purpose", b"batch", None), ("file", content, "dir/in.jsonl")))
    assert data == content
    assert (form.fields, form.filename, form.file_bytes) == ({"purpose": "batch"}, "in.jsonl", 180)


def test_a_file_over_the_limit_is_refused_as_soon_as_it_passes_it() -> None:
    form = UploadForm(BOUNDARY, max_file_bytes=10)
    body = _body(("file", b"x" * 50, "a"))
    handed_out = 0

    def feed_all() -> None:
        nonlocal handed_out
        for start in range(0, len(body), 5):
            form.feed(body[start : start + 5])
            handed_out += sum(map(len, form.take_file_data()))

    with pytest.raises(UploadTooLarge):
        feed_all()
    assert handed_out <= 10


@pytest.mark.parametrize(
    "body",
    [
        _body(("purpose", b"batch", None)),  # no file
        _body(("file", b"a", "a"), ("file", b"b", "b")),  # two files
        _body(("purpose", b"x" * (MAX_FIELD_BYTES + 1), None), ("file", b"a", "a")),
        _body(("purpose", b"\xff\xfe", None), ("file", b"a", "a")),
        _body(("file", b"a", "a"))[:-10],  # cut short
    ],
)
def test_malformed_uploads(body: bytes) -> None:
    with pytest.raises(UploadError):
        _read(body)


def test_the_content_type_must_be_multipart() -> None:
    assert boundary_of('multipart/form-data; boundary="abc"') == b"abc"
    for bad in (None, "application/json", "multipart/form-data"):
        with pytest.raises(UploadError):
            boundary_of(bad)
