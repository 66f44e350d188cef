"""Recorded traffic as an ingest source: a real trace replayed on a simulated GPU fleet.

- :mod:`~services.ingest.trace.azure`: reading the Azure LLM inference trace 2023 (CSV), and
  the code trace shipped in ``data/`` (:data:`~services.ingest.trace.azure.TRACE`);
- :mod:`~services.ingest.trace.fleet`: the fleet description (data: ``data/default_fleet.json``)
  and the deterministic placement of each request on it;
- :mod:`~services.ingest.trace.bill`: the FOCUS bill the fleet's provider would send;
- :mod:`~services.ingest.trace.replay`: ``inferledger replay azure-trace``, the feed to Kafka
  (through the emitter) or to a JSONL file.
"""

from services.ingest.trace.azure import TRACE, TraceError, read_trace
from services.ingest.trace.fleet import Fleet, FleetError, default_fleet

__all__ = ["TRACE", "Fleet", "FleetError", "TraceError", "default_fleet", "read_trace"]
