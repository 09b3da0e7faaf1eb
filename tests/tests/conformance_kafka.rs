//! The event store contract against the Kafka store, on the real broker at `KEEL_TEST_KAFKA`
//! (`scripts/kafka.sh` starts one). Every test has its own topics, so they run in parallel.

keel::conformance_suite!(keel::testing::conformance::KafkaBackend);
