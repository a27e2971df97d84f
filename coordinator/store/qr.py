"""The printable image of a table's QR code.

Error correction level M (15 % of the symbol may be lost; segno raises it further when the
data leaves room) survives a worn, splashed table card while keeping modules large.
"""

from __future__ import annotations

import io

import segno


def qr_png(url: str, scale: int = 8) -> bytes:
    """Render ``url`` as a PNG QR code: ``scale`` pixels per module, with the standard 4-module quiet zone."""
    buffer = io.BytesIO()
    segno.make_qr(url, error="m").save(buffer, kind="png", scale=scale, border=4)
    return buffer.getvalue()
