"""Getting events, rates and bills into Kafka."""
