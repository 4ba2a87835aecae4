"""Small JPEG thumbnails as ``data:`` URIs, for results that show themselves in notebooks."""

from __future__ import annotations

import base64
import io

from ..errors import ImageLoadError
from .images import ImageSource, load_image

THUMBNAIL_SIDE = 128


def thumbnail_uri(source: ImageSource, side: int = THUMBNAIL_SIDE, *, time: float | None = None) -> str | None:
    """A JPEG thumbnail (longer side ``side``) of an image, or of a video's frame at ``time`` seconds, as a
    ``data:`` URI; None when it cannot be read (a notebook shows the name alone)."""
    try:
        if time is None:
            image = load_image(source, draft_size=side)
        else:
            from .video import load_video_frame

            image = load_video_frame(source, time, side=side)
    except ImageLoadError:
        return None
    image = image.copy()
    image.thumbnail((side, side))
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=80)
    return "data:image/jpeg;base64," + base64.b64encode(buffer.getvalue()).decode()


def figure_html(uri: str | None, name: str, lines: list[str]) -> str:
    """One grid cell: the thumbnail (if any), the escaped name and lines of escaped text."""
    from html import escape

    picture = f'<img src="{uri}" alt="{escape(name)}" style="max-width:128px;max-height:128px">' if uri else ""
    text = "".join(f"<div>{escape(line)}</div>" for line in lines)
    return (f'<figure style="display:inline-block;margin:4px;vertical-align:top;width:136px;font-size:12px">'
            f'{picture}<figcaption><div style="overflow-wrap:anywhere"><b>{escape(name)}</b></div>{text}'
            "</figcaption></figure>")
