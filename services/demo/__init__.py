"""The demo: the real Azure LLM trace replayed on a simulated GPU fleet."""
