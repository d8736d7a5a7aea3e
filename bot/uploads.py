"""Reading a file out of a multipart form (the web chat's upload and the console's), with the
size checked while it streams in: a body is never read past the limit."""

from __future__ import annotations

from dataclasses import dataclass, field
from urllib.parse import unquote

from aiohttp import web


class UploadRefused(Exception):
    """The form cannot be taken; ``status`` and the Chinese ``message`` say why."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


@dataclass
class UploadedForm:
    file_name: str | None = None
    data: bytes = b""
    fields: dict[str, str] = field(default_factory=dict)


def too_big(limit: int) -> str:
    return f"文件过大：最大 {limit // (1024 * 1024)} MB。"


async def read_upload(request: web.Request, limit: int, *, field_name: str = "file",
                      max_field_chars: int = 200) -> UploadedForm:
    """The first ``field_name`` file of the form and its other (short) fields. Raises
    ``UploadRefused`` (413 over ``limit``, 400 for a body that is no multipart form)."""
    if request.content_length is not None and request.content_length > limit + 64 * 1024:
        raise UploadRefused(413, too_big(limit))
    try:
        reader = await request.multipart()
    except (AssertionError, ValueError, KeyError):
        raise UploadRefused(400, "请求格式不正确：请用表单上传文件（字段 file）。") from None
    form = UploadedForm()
    data = bytearray()
    while (part := await reader.next()) is not None:
        if part.name == field_name and form.file_name is None:
            # browsers send the name as UTF-8; some clients percent-encode it (RFC 5987)
            form.file_name = unquote(part.filename or "upload")
            while chunk := await part.read_chunk(64 * 1024):
                data += chunk
                if len(data) > limit:
                    raise UploadRefused(413, too_big(limit))
        elif part.name and not part.filename:
            form.fields[part.name] = (await part.text())[:max_field_chars]
        else:
            await part.release()
    form.data = bytes(data)
    return form


__all__ = ["UploadRefused", "UploadedForm", "read_upload", "too_big"]
