"""The engine as a Kafka service: configuration, topics, the exactly-once loop."""
