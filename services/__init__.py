"""inferledger: event-driven cost accounting for LLM inference."""
