"""Block streaming: run a model whose weights mostly live in CPU RAM (or on disk)."""

from .streamer import BlockStreamer, StreamStats
from .wrap import StreamedModule, stream_modules

__all__ = ["BlockStreamer", "StreamStats", "StreamedModule", "stream_modules"]
