"""Reading an uploaded query image: the size limit checked while the body arrives, then the hardened decoder."""

from __future__ import annotations

import io

from fastapi import HTTPException, Request
from starlette.datastructures import UploadFile

import transferkit as tk

from .limits import MAX_UPLOAD_BYTES

#: Room for the multipart boundaries and the small form fields around the file.
FORM_OVERHEAD = 64 * 1024


def _too_large(limit: int) -> HTTPException:
    return HTTPException(413, f"The upload is larger than the limit of {limit:,} bytes. Send a smaller image.")


async def read_form(request: Request, *, limit: int = MAX_UPLOAD_BYTES) -> tuple[bytes, dict[str, str]]:
    """The ``file`` part's bytes and the other fields of a multipart upload.

    The body is counted as it arrives and reading stops (413) once it passes ``limit`` plus the
    form's overhead: an oversized upload is never held whole in memory or on disk.

    Raises:
        HTTPException: 413 over the limit, 400 not a multipart form or no ``file``.
    """
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit + FORM_OVERHEAD:
        raise _too_large(limit)
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit + FORM_OVERHEAD:
            raise _too_large(limit)
        chunks.append(chunk)
    body = b"".join(chunks)
    sent = False

    async def replay():
        nonlocal sent
        if sent:
            return {"type": "http.disconnect"}
        sent = True
        return {"type": "http.request", "body": body, "more_body": False}

    if not request.headers.get("content-type", "").startswith("multipart/form-data"):
        raise HTTPException(400, "Send the query image as multipart/form-data with the image in the field `file`.")
    try:
        form = await Request(request.scope, replay).form(max_files=1, max_fields=16)
    except HTTPException:
        raise
    except Exception as exc:  # noqa: BLE001 - a malformed body is the sender's mistake
        raise HTTPException(400, f"Cannot parse the multipart form: {exc}.") from None
    upload = form.get("file")
    if not isinstance(upload, UploadFile):
        raise HTTPException(400, "The form has no file in the field `file`. Upload the query image as `file`.")
    data = await upload.read()
    if len(data) > limit:
        raise _too_large(limit)
    if not data:
        raise HTTPException(400, "The uploaded file is empty. Upload a JPEG, PNG or another image.")
    fields = {k: v for k, v in form.items() if isinstance(v, str)}
    return data, fields


def decode_upload(data: bytes, *, max_pixels: int | None):
    """The uploaded bytes as an RGB PIL image, decoded by :func:`transferkit.load_image` with the pixel limit.

    Raises:
        HTTPException: 400 not an image, or over the pixel limit.
    """
    try:
        return tk.load_image(io.BytesIO(data), max_pixels=max_pixels)
    except Exception as exc:  # noqa: BLE001 - load_image raises one error type for every unreadable file
        reason = str(exc) or type(exc).__name__
        if "exceeds the limit" in reason:
            raise HTTPException(400, f"The image is over the pixel limit: {reason}.") from None
        raise HTTPException(400, f"The upload is not an image that can be read ({reason}). Upload a JPEG, PNG or another image.") from None
