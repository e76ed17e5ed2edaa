//! AMQP helpers for `scripts/bench`:
//!
//! - `declare URI QUEUE EXCHANGE ROUTING_KEY [MAX_LEN]`: a queue bound to a direct exchange
//! - `publish URI EXCHANGE ROUTING_KEY SECONDS WINDOW [headers]`: the reference
//!   publisher (lapin, windows of WINDOW publishes joined, then their confirms
//!   awaited), with the module's message headers when `headers` is given
//! - `bridge URI EXCHANGE ROUTING_KEY REDIS_PORT`: what users would otherwise run:
//!   a Pub/Sub keyspace-notification subscriber that republishes with confirms
//! - `write REDIS_PORT COUNT RATE`: SETs `w0..w{COUNT}` at RATE per second
//! - `e2e URI EXCHANGE ROUTING_KEY REDIS_PORT COUNT RATE`: writes keys that carry
//!   their write time and reports the time until a consumer got each event

use futures_lite::StreamExt;
use lapin::options::{
    BasicConsumeOptions, BasicPublishOptions, ConfirmSelectOptions, ExchangeDeclareOptions,
    QueueBindOptions, QueueDeclareOptions,
};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{BasicProperties, Channel, Connection, ConnectionProperties, ExchangeKind};
use redis_keyspace_amqp::amqp::route;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

type Res<T> = Result<T, Box<dyn std::error::Error>>;

async fn channel(uri: &str) -> Res<(Connection, Channel)> {
    let conn = Connection::connect(uri, ConnectionProperties::default()).await?;
    let ch = conn.create_channel().await?;
    Ok((conn, ch))
}

async fn declare(
    uri: &str,
    queue: &str,
    exchange: &str,
    rk: &str,
    max_len: Option<i64>,
) -> Res<()> {
    let (conn, ch) = channel(uri).await?;
    ch.exchange_declare(
        exchange.into(),
        ExchangeKind::Direct,
        ExchangeDeclareOptions {
            durable: true,
            ..Default::default()
        },
        FieldTable::default(),
    )
    .await?;
    let mut args = FieldTable::default();
    if let Some(n) = max_len {
        args.insert("x-max-length".into(), AMQPValue::LongLongInt(n));
    }
    ch.queue_declare(
        queue.into(),
        QueueDeclareOptions {
            durable: true,
            ..Default::default()
        },
        args,
    )
    .await?;
    ch.queue_bind(
        queue.into(),
        exchange.into(),
        rk.into(),
        QueueBindOptions::default(),
        FieldTable::default(),
    )
    .await?;
    conn.close(200, "ok".into()).await?;
    Ok(())
}

fn body(i: u64) -> Vec<u8> {
    format!("0\nset\nkey:{:012}", i % 1_000_000).into_bytes()
}

async fn publish(
    uri: &str,
    exchange: &str,
    rk: &str,
    seconds: u64,
    window: usize,
    headers: bool,
) -> Res<()> {
    let (conn, ch) = channel(uri).await?;
    ch.confirm_select(ConfirmSelectOptions::default()).await?;
    let start = Instant::now();
    let mut confirmed = 0u64;
    let mut i = 0u64;
    while start.elapsed() < Duration::from_secs(seconds) {
        let mut writes = Vec::with_capacity(window);
        for _ in 0..window {
            i += 1;
            let b = body(i);
            let mut props = BasicProperties::default()
                .with_content_type("text/plain".into())
                .with_message_id(format!("ref-{i}").into())
                .with_timestamp(1);
            if headers {
                let rec = [&b"ref-1\n1\n"[..], &b].concat();
                let mut t = lapin::types::FieldTable::default();
                if let Some(p) = redis_keyspace_amqp::event::split(&rec) {
                    route::headers(&mut t, &p, "6379/reference");
                }
                props = props.with_headers(t);
            }
            let ch = ch.clone();
            let (ex, rk) = (exchange.to_string(), rk.to_string());
            let mut w = Box::pin(async move {
                ch.basic_publish(
                    ex.into(),
                    rk.into(),
                    BasicPublishOptions::default(),
                    &b,
                    props,
                )
                .await
            });
            // Push the frames now (the first poll does), so the I/O loop writes them in big chunks.
            match futures_lite::future::poll_once(w.as_mut()).await {
                Some(done) => writes.push(Err(done)),
                None => writes.push(Ok(w)),
            }
        }
        let mut confirms = Vec::with_capacity(window);
        for w in writes {
            confirms.push(match w {
                Ok(pending) => pending.await?,
                Err(done) => done?,
            });
        }
        for c in confirms {
            if c.await?.is_ack() {
                confirmed += 1;
            }
        }
    }
    let secs = start.elapsed().as_secs_f64();
    println!(
        "reference_confirmed={confirmed} seconds={secs:.2} rate={:.0}",
        confirmed as f64 / secs
    );
    conn.close(200, "ok".into()).await?;
    Ok(())
}

async fn bridge(uri: &str, exchange: &str, rk: &str, redis_port: u16) -> Res<()> {
    let (_conn, ch) = channel(uri).await?;
    ch.confirm_select(ConfirmSelectOptions::default()).await?;
    let client = redis::Client::open(format!("redis://127.0.0.1:{redis_port}/"))?;
    let mut con = client.get_connection()?;
    let mut pubsub = con.as_pubsub();
    pubsub.psubscribe("__keyevent@*__:*")?;
    eprintln!("bridge: subscribed");
    loop {
        let msg = pubsub.get_message()?;
        let channel = msg.get_channel_name().to_string();
        let key: Vec<u8> = msg.get_payload()?;
        // __keyevent@<db>__:<event>
        let rest = channel.trim_start_matches("__keyevent@");
        let (db, event) = rest.split_once("__:").unwrap_or(("0", rest));
        let mut b = format!("{db}\n{event}\n").into_bytes();
        b.extend_from_slice(&key);
        let props = BasicProperties::default()
            .with_content_type("text/plain".into())
            .with_delivery_mode(2);
        let confirm = ch
            .basic_publish(
                exchange.into(),
                rk.into(),
                BasicPublishOptions::default(),
                &b,
                props,
            )
            .await?;
        confirm.await?;
    }
}

async fn e2e(
    uri: &str,
    exchange: &str,
    rk: &str,
    redis_port: u16,
    count: usize,
    rate: u64,
) -> Res<()> {
    let queue = format!("e2e-{}", std::process::id());
    declare(uri, &queue, exchange, rk, None).await?;
    let (_conn, ch) = channel(uri).await?;
    let mut consumer = ch
        .basic_consume(
            queue.as_str().into(),
            "e2e".into(),
            BasicConsumeOptions {
                no_ack: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await?;
    let writer = std::thread::spawn(move || -> redis::RedisResult<()> {
        let mut c =
            redis::Client::open(format!("redis://127.0.0.1:{redis_port}/"))?.get_connection()?;
        // Paced against the clock: every millisecond, the writes due by then
        // go in one pipeline (so that 20,000/s and more fit one connection).
        let start = Instant::now();
        let mut sent = 0usize;
        while sent < count {
            let due = (start.elapsed().as_secs_f64() * rate.max(1) as f64) as usize;
            let due = due.min(count);
            if due <= sent {
                std::thread::sleep(Duration::from_micros(200));
                continue;
            }
            let mut p = redis::pipe();
            for _ in sent..due {
                let now = SystemTime::now()
                    .duration_since(UNIX_EPOCH)
                    .map(|d| d.as_nanos())
                    .unwrap_or(0);
                p.cmd("SET").arg(format!("e2e:{now}")).arg("v").ignore();
            }
            p.query::<()>(&mut c)?;
            sent = due;
            std::thread::sleep(Duration::from_millis(1));
        }
        Ok(())
    });
    let mut lat = Vec::with_capacity(count);
    while lat.len() < count {
        let Some(d) = consumer.next().await else {
            break;
        };
        let d = d?;
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        let key = String::from_utf8_lossy(&d.data)
            .rsplit('\n')
            .next()
            .unwrap_or("")
            .to_string();
        if let Some(t) = key
            .strip_prefix("e2e:")
            .and_then(|t| t.parse::<u128>().ok())
        {
            lat.push(now.saturating_sub(t) as f64 / 1e6);
        }
    }
    let _ = writer.join();
    lat.sort_by(|a, b| a.total_cmp(b));
    let pct = |p: f64| lat[((lat.len() as f64 - 1.0) * p) as usize];
    println!(
        "e2e_count={} p50_ms={:.3} p99_ms={:.3} max_ms={:.3}",
        lat.len(),
        pct(0.5),
        pct(0.99),
        pct(1.0)
    );
    ch.queue_delete(queue.as_str().into(), Default::default())
        .await?;
    Ok(())
}

fn write(redis_port: u16, count: u64, rate: u64) -> Res<()> {
    let mut c =
        redis::Client::open(format!("redis://127.0.0.1:{redis_port}/"))?.get_connection()?;
    let start = Instant::now();
    for i in 0..count {
        // Paced against the clock, so the stream spans count / rate seconds.
        let due = Duration::from_micros(i * 1_000_000 / rate.max(1));
        if let Some(wait) = due.checked_sub(start.elapsed()) {
            std::thread::sleep(wait);
        }
        redis::cmd("SET")
            .arg(format!("w{i}"))
            .arg("v")
            .query::<()>(&mut c)?;
    }
    Ok(())
}

fn main() {
    let a: Vec<String> = std::env::args().skip(1).collect();
    let get = |i: usize| a.get(i).cloned().unwrap_or_default();
    let num = |i: usize| get(i).parse::<u64>().unwrap_or(0);
    let r = async_global_executor::block_on(async {
        match get(0).as_str() {
            "declare" => {
                declare(
                    &get(1),
                    &get(2),
                    &get(3),
                    &get(4),
                    a.get(5).and_then(|n| n.parse().ok()),
                )
                .await
            }
            "publish" => {
                let headers = get(6) == "headers";
                publish(&get(1), &get(2), &get(3), num(4), num(5) as usize, headers).await
            }
            "bridge" => bridge(&get(1), &get(2), &get(3), num(4) as u16).await,
            "write" => write(num(1) as u16, num(2), num(3)),
            "e2e" => {
                e2e(
                    &get(1),
                    &get(2),
                    &get(3),
                    num(4) as u16,
                    num(5) as usize,
                    num(6),
                )
                .await
            }
            _ => Err("usage: bench_amqp declare|publish|bridge|write|e2e ...".into()),
        }
    });
    if let Err(e) = r {
        eprintln!("bench_amqp: {e}");
        std::process::exit(1);
    }
}
