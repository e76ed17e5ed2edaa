//! The consumer against a real RabbitMQ: hand-written messages published to
//! a queue are applied in order and acked; a repeated id is dropped; a seed
//! message stops it and stays in the queue.
//!
//! Needs a broker with the guest user on `127.0.0.1:$KEA_AMQP_PORT` (what
//! `scripts/test` exports); without the variable the test says so and passes.

mod common;

use common::{body, run, Server};
use lapin::options::{
    BasicPublishOptions, ConfirmSelectOptions, QueueDeclareOptions, QueueDeleteOptions,
};
use lapin::types::FieldTable;
use lapin::{BasicProperties, Channel, Connection, ConnectionProperties};
use replicate::consume::{self, Options};
use replicate::{Error, Kind, Stats};
use serde_json::json;
use std::time::{Duration, Instant};

fn amqp_uri() -> Option<String> {
    let port = std::env::var("KEA_AMQP_PORT").ok()?;
    Some(format!("amqp://guest:guest@127.0.0.1:{port}/%2f"))
}

/// A connection and a channel in confirm mode, with `queue` declared.
fn channel(uri: &str, queue: &str) -> (Connection, Channel) {
    async_global_executor::block_on(async {
        let conn = Connection::connect(uri, ConnectionProperties::default()).await?;
        let ch = conn.create_channel().await?;
        ch.confirm_select(ConfirmSelectOptions::default()).await?;
        ch.queue_declare(
            queue.into(),
            QueueDeclareOptions::default(),
            FieldTable::default(),
        )
        .await?;
        Ok::<_, lapin::Error>((conn, ch))
    })
    .expect("broker channel")
}

/// Publishes `bodies` to `queue` through the default exchange, confirmed.
fn publish(ch: &Channel, queue: &str, bodies: &[Vec<u8>]) {
    async_global_executor::block_on(async {
        for b in bodies {
            ch.basic_publish(
                "".into(),
                queue.into(),
                BasicPublishOptions::default(),
                b,
                BasicProperties::default().with_content_type("application/json".into()),
            )
            .await?
            .await?;
        }
        Ok::<_, lapin::Error>(())
    })
    .expect("publish");
}

/// Messages ready in `queue`.
fn ready(ch: &Channel, queue: &str) -> u32 {
    let q = async_global_executor::block_on(ch.queue_declare(
        queue.into(),
        QueueDeclareOptions {
            passive: true,
            ..Default::default()
        },
        FieldTable::default(),
    ))
    .expect("passive declare");
    q.message_count()
}

/// Waits (bounded) until `queue` holds `n` ready messages.
fn wait_ready(ch: &Channel, queue: &str, n: u32) {
    let start = Instant::now();
    while ready(ch, queue) != n {
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "queue {queue} never held {n} messages (it holds {})",
            ready(ch, queue)
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn set(key: &str, value: &str, id: &str) -> Vec<u8> {
    let mut b: serde_json::Value = serde_json::from_slice(&body(
        0,
        "set",
        json!(key),
        json!({"after":{"type":"string","value":value}}),
    ))
    .expect("json");
    b["id"] = json!(id);
    b.to_string().into_bytes()
}

#[test]
fn consumes_a_queue_in_order_and_stops_at_a_seed_message() {
    let Some(uri) = amqp_uri() else {
        eprintln!("consume: KEA_AMQP_PORT is not set: no broker, test skipped");
        return;
    };
    let target = Server::start();
    let queue = format!("replicate-test-{}", std::process::id());
    let (conn, ch) = channel(&uri, &queue);

    // 250 keys (more than one ack batch), a key set twice with a repeat of
    // the first message in between (dropped), a delete, a stream.
    let mut bodies: Vec<Vec<u8>> = (0..250)
        .map(|i| set(&format!("k{i}"), "v", &format!("n-{i}")))
        .collect();
    bodies.push(set("twice", "first", "n-first"));
    bodies.push(set("twice", "second", "n-second"));
    bodies.push(set("twice", "first", "n-first"));
    bodies.push(body(0, "del", json!("k0"), json!({})));
    bodies.push(body(
        0,
        "xadd",
        json!("st"),
        json!({"after":{"type":"stream","omitted":"type"}}),
    ));
    publish(&ch, &queue, &bodies);

    let options = Options {
        amqp: uri.clone(),
        queue: queue.clone(),
        target: target.url(),
        idle_exit: Some(Duration::from_millis(500)),
        prefetch: 300,
    };
    let mut stats = Stats::default();
    consume::run(&options, &mut stats).expect("consume");
    assert_eq!(
        (stats.written, stats.deleted, stats.duplicates),
        (252, 1, 1),
        "{}",
        stats.summary()
    );
    assert_eq!(stats.unapplied.get(&(Kind::Stream, "type")), Some(&1));
    let mut c = target.conn();
    assert_eq!(run::<i64>(&mut c, &["DBSIZE"]), 250);
    assert_eq!(run::<String>(&mut c, &["GET", "twice"]), "second");
    assert_eq!(run::<i64>(&mut c, &["EXISTS", "k0"]), 0);
    wait_ready(&ch, &queue, 0);

    // A seed message: an error that names the fix; it stays in the queue,
    // the one before it is applied and acked.
    publish(
        &ch,
        &queue,
        &[set("before-seed", "v", "n-before"), b"0\nset\nk".to_vec()],
    );
    let mut stats = Stats::default();
    let e = consume::run(&options, &mut stats).unwrap_err();
    assert!(matches!(e, Error::NotJson), "{e}");
    assert_eq!(stats.written, 1);
    assert_eq!(run::<String>(&mut c, &["GET", "before-seed"]), "v");
    wait_ready(&ch, &queue, 1);

    async_global_executor::block_on(async {
        let _ = ch
            .queue_delete(queue.as_str().into(), QueueDeleteOptions::default())
            .await;
        let _ = conn.close(200, "done".into()).await;
    });
}
