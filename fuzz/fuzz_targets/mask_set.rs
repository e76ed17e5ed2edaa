//! Fuzz target: see `redis_keyspace_amqp::fuzzing::mask_set`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    redis_keyspace_amqp::fuzzing::mask_set(data);
});
