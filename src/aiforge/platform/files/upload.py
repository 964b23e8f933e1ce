"""Reading a ``multipart/form-data`` upload as it arrives, never holding the file in memory.

:class:`UploadForm` is fed the body chunk by chunk (:meth:`UploadForm.feed`); the bytes of
the ``file`` part are handed out as they are parsed (:meth:`UploadForm.take_file_data`) for
the caller to write to disk, and counted: the upload is refused as soon as the file passes
``max_file_bytes`` (:class:`UploadTooLarge`), having stored at most that much. The other
fields (``purpose``) are small text kept in memory, each bounded. Pure: no I/O here.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from python_multipart.exceptions import MultipartParseError
from python_multipart.multipart import MultipartParser, parse_options_header

if TYPE_CHECKING:
    from python_multipart.multipart import MultipartCallbacks

FILE_FIELD = "file"
MAX_FIELD_BYTES = 1024
"""A text field (``purpose``) longer than this is refused."""
MAX_FIELDS = 16
MAX_FILENAME_CHARS = 512


class UploadError(Exception):
    """The upload is malformed (400); ``param`` names the field when there is one."""

    def __init__(self, message: str, *, param: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.param = param


class UploadTooLarge(UploadError):
    """The file passed the size limit (413)."""


def boundary_of(content_type: str | None) -> bytes:
    """The multipart boundary of a ``Content-Type`` header, or :class:`UploadError`."""
    kind, options = parse_options_header(content_type or "")
    boundary = options.get(b"boundary")
    if kind != b"multipart/form-data" or not boundary:
        raise UploadError(
            "Upload a file as multipart/form-data with the fields `file` and `purpose`."
        )
    return boundary


@dataclass
class _Part:
    headers: dict[str, bytes] = field(default_factory=dict)
    name: str = ""
    filename: str | None = None
    value: bytearray = field(default_factory=bytearray)


class UploadForm:
    """One multipart body being parsed; see the module docstring."""

    def __init__(self, boundary: bytes, *, max_file_bytes: int) -> None:
        self.max_file_bytes = max_file_bytes
        self.fields: dict[str, str] = {}
        self.filename: str | None = None
        """The file part's filename (set when its headers are parsed)."""
        self.file_bytes = 0
        self.complete = False
        self._pending: list[bytes] = []
        self._part = _Part()
        self._header_field = b""
        self._header_value = b""
        callbacks: MultipartCallbacks = {
            "on_part_begin": self._part_begin,
            "on_header_field": self._header_field_data,
            "on_header_value": self._header_value_data,
            "on_header_end": self._header_end,
            "on_headers_finished": self._headers_finished,
            "on_part_data": self._part_data,
            "on_part_end": self._part_end,
            "on_end": self._end,
        }
        self._parser = MultipartParser(boundary, callbacks)

    def feed(self, chunk: bytes) -> None:
        """Parse the next chunk of the body (raises :class:`UploadError`)."""
        try:
            self._parser.write(chunk)
        except MultipartParseError as error:
            raise UploadError(f"The multipart body is malformed: {error}") from None

    def finish(self) -> None:
        """The body ended: check it was complete and had a file."""
        self._parser.finalize()
        if not self.complete:
            raise UploadError("The multipart body ended before its closing boundary.")
        if self.filename is None:
            raise UploadError("The upload has no `file` part.", param=FILE_FIELD)

    def take_file_data(self) -> list[bytes]:
        """The file's bytes parsed since the last call, in order."""
        pending, self._pending = self._pending, []
        return pending

    # -- parser callbacks -------------------------------------------------------------
    def _part_begin(self) -> None:
        if len(self.fields) >= MAX_FIELDS:
            raise UploadError("The upload has too many fields.")
        self._part = _Part()

    def _header_field_data(self, data: bytes, start: int, end: int) -> None:
        self._header_field += data[start:end]

    def _header_value_data(self, data: bytes, start: int, end: int) -> None:
        self._header_value += data[start:end]

    def _header_end(self) -> None:
        self._part.headers[self._header_field.decode("latin-1").lower()] = self._header_value
        self._header_field = self._header_value = b""

    def _headers_finished(self) -> None:
        part = self._part
        _, options = parse_options_header(part.headers.get("content-disposition", b""))
        part.name = options.get(b"name", b"").decode("utf-8", "replace")
        filename = options.get(b"filename")
        if part.name == FILE_FIELD:
            if self.filename is not None:
                raise UploadError("The upload has more than one file.", param=FILE_FIELD)
            name = (filename or b"").decode("utf-8", "replace").replace("\\", "/")
            name = name.rpartition("/")[2][:MAX_FILENAME_CHARS]
            self.filename = name or "upload"

    def _part_data(self, data: bytes, start: int, end: int) -> None:
        part = self._part
        if part.name == FILE_FIELD:
            self.file_bytes += end - start
            if self.file_bytes > self.max_file_bytes:
                raise UploadTooLarge(
                    f"The file is larger than this server's limit of {self.max_file_bytes} "
                    "bytes (AIFORGE_FILES_MAX_BYTES).",
                    param=FILE_FIELD,
                )
            self._pending.append(bytes(data[start:end]))
            return
        part.value += data[start:end]
        if len(part.value) > MAX_FIELD_BYTES:
            raise UploadError(f"The field `{part.name}` is too long.", param=part.name)

    def _part_end(self) -> None:
        part = self._part
        if part.name != FILE_FIELD and part.name:
            try:
                self.fields[part.name] = part.value.decode("utf-8")
            except UnicodeDecodeError:
                raise UploadError(
                    f"The field `{part.name}` is not UTF-8 text.", param=part.name
                ) from None

    def _end(self) -> None:
        self.complete = True
