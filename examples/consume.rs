//! A small consumer: declares a queue bound to the module's exchange and
//! routing key, and prints every event as it arrives.
//!
//! `cargo run --release --example consume -- [amqp_uri] [exchange] [routing_key] [count]`

use futures_lite::StreamExt;
use lapin::options::{BasicConsumeOptions, QueueBindOptions, QueueDeclareOptions};
use lapin::types::FieldTable;
use lapin::{Connection, ConnectionProperties};

fn main() {
    let mut args = std::env::args().skip(1);
    let uri = args
        .next()
        .unwrap_or_else(|| "amqp://guest:guest@127.0.0.1:5672/%2f".into());
    let exchange = args.next().unwrap_or_else(|| "amq.direct".into());
    let routing_key = args
        .next()
        .unwrap_or_else(|| "redis_keyspace_events".into());
    let count: usize = args
        .next()
        .and_then(|c| c.parse().ok())
        .unwrap_or(usize::MAX);
    let result = async_global_executor::block_on(async {
        let conn = Connection::connect(&uri, ConnectionProperties::default()).await?;
        let ch = conn.create_channel().await?;
        let queue = ch
            .queue_declare(
                "".into(),
                QueueDeclareOptions {
                    exclusive: true,
                    ..Default::default()
                },
                FieldTable::default(),
            )
            .await?;
        ch.queue_bind(
            queue.name().clone(),
            exchange.as_str().into(),
            routing_key.as_str().into(),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await?;
        eprintln!("consume: waiting for events on {exchange} / {routing_key}");
        let mut consumer = ch
            .basic_consume(
                queue.name().clone(),
                "consume".into(),
                BasicConsumeOptions {
                    no_ack: true,
                    ..Default::default()
                },
                FieldTable::default(),
            )
            .await?;
        let mut seen = 0;
        while seen < count {
            let Some(delivery) = consumer.next().await else {
                break;
            };
            let delivery = delivery?;
            let id = delivery
                .properties
                .message_id()
                .as_ref()
                .map(|s| s.to_string())
                .unwrap_or_default();
            let body = String::from_utf8_lossy(&delivery.data).replace('\n', " | ");
            println!("{id}: {body}");
            seen += 1;
        }
        Ok::<_, lapin::Error>(())
    });
    if let Err(e) = result {
        eprintln!("consume: {e}");
        std::process::exit(1);
    }
}
