"""Getting events, rates and bills into Kafka."""

from services.ingest.emitter import Emitter

__all__ = ["Emitter"]
