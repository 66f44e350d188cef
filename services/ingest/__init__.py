"""Getting events, rates and bills into Kafka: files, the gateway, the proxy, the emitter SDK,
and recorded traffic replayed on a simulated fleet (:mod:`services.ingest.trace`)."""

from services.ingest.emitter import Emitter

__all__ = ["Emitter"]
