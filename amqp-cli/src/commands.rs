//! The one-shot commands: publish, consume, get, declare, delete, bind, unbind (on tokio).

use std::io::{BufRead, Write};
use std::time::Duration;

use amqp_client::{
    BasicConsumeOptions, BasicGetOptions, BasicProperties, BasicPublishOptions, BasicQosOptions,
    Channel, ConfirmSelectOptions, Confirmation, Connection, Delivery, ExchangeBindOptions,
    ExchangeDeclareOptions, ExchangeDeleteOptions, FieldTable, FieldValue, QueueBindOptions,
    QueueDeclareOptions, QueueDeleteOptions, QueueUnbindOptions,
};
use bytes::Bytes;
use clap::{Args, Subcommand, ValueEnum};
use futures_util::StreamExt;
use serde_json::{Map, Value, json};

use crate::error::CliError;

/// Where to connect.
#[derive(Debug, Clone, Args)]
pub struct ConnArgs {
    /// Broker URI.
    #[arg(long, default_value = crate::DEFAULT_URI)]
    pub uri: String,
}

/// `amqp publish`.
#[derive(Debug, Clone, Args)]
pub struct PublishArgs {
    #[command(flatten)]
    pub conn: ConnArgs,
    /// Exchange ("" is the default exchange, which routes by queue name).
    #[arg(short = 'e', long, default_value = "")]
    pub exchange: String,
    /// Routing key (the queue name, for the default exchange).
    #[arg(short = 'k', long, default_value = "")]
    pub routing_key: String,
    /// The body. Without it (and without --file) the body is read from stdin.
    pub body: Option<String>,
    /// Read the body from a file.
    #[arg(long, conflicts_with = "body")]
    pub file: Option<std::path::PathBuf>,
    /// Publish each line of stdin as its own message.
    #[arg(long, conflicts_with_all = ["body", "file"])]
    pub lines: bool,
    /// Header `key=value` (repeatable; integers and true/false are typed).
    #[arg(short = 'H', long = "header", value_parser = parse_kv)]
    pub headers: Vec<(String, String)>,
    #[arg(long)]
    pub content_type: Option<String>,
    #[arg(long)]
    pub content_encoding: Option<String>,
    #[arg(long)]
    pub correlation_id: Option<String>,
    #[arg(long)]
    pub reply_to: Option<String>,
    /// Per-message TTL in milliseconds.
    #[arg(long)]
    pub expiration: Option<String>,
    #[arg(long)]
    pub message_id: Option<String>,
    #[arg(long = "type")]
    pub kind: Option<String>,
    #[arg(long)]
    pub app_id: Option<String>,
    #[arg(long)]
    pub priority: Option<u8>,
    /// Persistent (delivery_mode 2).
    #[arg(long)]
    pub persistent: bool,
    /// Return the message if it cannot be routed (reported as an error, code 7).
    #[arg(long)]
    pub mandatory: bool,
    /// Do not wait for publisher confirms (by default every message is confirmed).
    #[arg(long)]
    pub no_confirm: bool,
}

/// How `consume` settles what it prints.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum AckMode {
    /// Consume with no_ack: the broker forgets each message as it sends it.
    Auto,
    /// Ack each message after printing it.
    Ack,
    /// Reject each message (not requeued: dead-lettered or dropped).
    Reject,
    /// Nack each message with requeue (the queue keeps it).
    Requeue,
}

/// `amqp consume`.
#[derive(Debug, Clone, Args)]
pub struct ConsumeArgs {
    #[command(flatten)]
    pub conn: ConnArgs,
    /// The queue.
    pub queue: String,
    /// Stop after this many messages.
    #[arg(short = 'n', long)]
    pub count: Option<u64>,
    /// Stop when no message came for this many seconds (with --count: exit code 8).
    #[arg(long)]
    pub timeout: Option<f64>,
    #[arg(long, value_enum, default_value_t = AckMode::Ack)]
    pub ack: AckMode,
    /// Prefetch (basic.qos).
    #[arg(short = 'q', long, default_value_t = 100)]
    pub prefetch: u16,
    /// One JSON object per message.
    #[arg(long)]
    pub json: bool,
}

/// `amqp get`.
#[derive(Debug, Clone, Args)]
pub struct GetArgs {
    #[command(flatten)]
    pub conn: ConnArgs,
    /// The queue.
    pub queue: String,
    /// Leave the message in the queue (nack with requeue) instead of acking it.
    #[arg(long)]
    pub requeue: bool,
    /// Print as one JSON object.
    #[arg(long)]
    pub json: bool,
}

/// What `declare` and `delete` act on.
#[derive(Debug, Clone, Subcommand)]
pub enum Entity {
    /// A queue.
    Queue(QueueArgs),
    /// An exchange.
    Exchange(ExchangeArgs),
}

#[derive(Debug, Clone, Args)]
pub struct QueueArgs {
    #[command(flatten)]
    pub conn: ConnArgs,
    /// Queue name ("" lets the broker choose, on declare).
    pub name: String,
    #[arg(long)]
    pub durable: bool,
    #[arg(long)]
    pub auto_delete: bool,
    /// Queue type (x-queue-type): classic, quorum or stream.
    #[arg(long = "type")]
    pub kind: Option<String>,
    /// Argument `key=value` (repeatable; integers and true/false are typed).
    #[arg(long = "arg", value_parser = parse_kv)]
    pub arguments: Vec<(String, String)>,
    /// Delete only if it has no consumers.
    #[arg(long)]
    pub if_unused: bool,
    /// Delete only if it has no messages.
    #[arg(long)]
    pub if_empty: bool,
}

#[derive(Debug, Clone, Args)]
pub struct ExchangeArgs {
    #[command(flatten)]
    pub conn: ConnArgs,
    /// Exchange name.
    pub name: String,
    /// Exchange type (direct, fanout, topic, headers, ...).
    #[arg(long = "type", default_value = "direct")]
    pub kind: String,
    #[arg(long)]
    pub durable: bool,
    #[arg(long)]
    pub auto_delete: bool,
    /// Argument `key=value` (repeatable).
    #[arg(long = "arg", value_parser = parse_kv)]
    pub arguments: Vec<(String, String)>,
    /// Delete only if it has no bindings.
    #[arg(long)]
    pub if_unused: bool,
}

/// `amqp bind` / `amqp unbind`.
#[derive(Debug, Clone, Args)]
pub struct BindArgs {
    #[command(flatten)]
    pub conn: ConnArgs,
    /// Source exchange.
    #[arg(short = 'e', long)]
    pub exchange: String,
    /// Destination queue.
    #[arg(
        short = 'u',
        long,
        required_unless_present = "to_exchange",
        conflicts_with = "to_exchange"
    )]
    pub queue: Option<String>,
    /// Destination exchange (an exchange-to-exchange binding).
    #[arg(long)]
    pub to_exchange: Option<String>,
    #[arg(short = 'k', long, default_value = "")]
    pub routing_key: String,
    /// Argument `key=value` (repeatable; e.g. for headers exchanges).
    #[arg(long = "arg", value_parser = parse_kv)]
    pub arguments: Vec<(String, String)>,
}

/// A `key=value` flag; the key becomes a field-table key, a short string on the wire, so one
/// over 255 bytes is refused here rather than reaching `FieldTable::with` (which panics on it).
fn parse_kv(s: &str) -> Result<(String, String), String> {
    let (k, v) = s
        .split_once('=')
        .ok_or_else(|| format!("expected key=value, got {s:?}"))?;
    if k.len() > 255 {
        return Err(format!(
            "the key is {} bytes long; AMQP table keys are at most 255 bytes",
            k.len()
        ));
    }
    Ok((k.to_owned(), v.to_owned()))
}

fn table(pairs: &[(String, String)]) -> FieldTable {
    pairs.iter().fold(FieldTable::new(), |t, (k, v)| {
        if let Ok(n) = v.parse::<i64>() {
            t.with(k, n)
        } else if let Ok(b) = v.parse::<bool>() {
            t.with(k, b)
        } else {
            t.with(k, v.as_str())
        }
    })
}

async fn channel(conn: &ConnArgs) -> Result<(Connection, Channel), CliError> {
    let connection = amqp_tokio::connect(&conn.uri).await?.into_inner();
    let channel = connection.open_channel().await?;
    Ok((connection, channel))
}

pub async fn publish(args: PublishArgs) -> Result<(), CliError> {
    let (conn, ch) = channel(&args.conn).await?;
    if !args.no_confirm {
        ch.confirm_select(ConfirmSelectOptions::default()).await?;
    }
    let props = properties(&args);
    let options = BasicPublishOptions {
        mandatory: args.mandatory,
        ..Default::default()
    };
    let mut confirms = Vec::new();
    let publish = |body: Bytes| {
        let (ch, props, args) = (&ch, &props, &args);
        async move {
            ch.basic_publish(&args.exchange, &args.routing_key, options, props, body)
                .await
        }
    };
    if args.lines {
        let stdin = std::io::stdin();
        for line in stdin.lock().lines() {
            confirms.push(publish(Bytes::from(line?)).await?);
        }
    } else {
        let body = match (&args.body, &args.file) {
            (Some(b), _) => Bytes::from(b.clone()),
            (None, Some(path)) => Bytes::from(std::fs::read(path)?),
            (None, None) => {
                let mut buf = Vec::new();
                std::io::Read::read_to_end(&mut std::io::stdin(), &mut buf)?;
                Bytes::from(buf)
            }
        };
        confirms.push(publish(body).await?);
    }
    let total = confirms.len();
    for confirm in confirms {
        match confirm.await {
            Confirmation::Ack(None) | Confirmation::NotRequested => {}
            Confirmation::Ack(Some(r)) | Confirmation::Nack(Some(r)) => {
                return Err(CliError {
                    code: crate::error::exit::BROKER,
                    message: format!(
                        "message returned: {} {} (exchange {:?}, routing key {:?})",
                        r.reply_code,
                        r.reply_text.as_str(),
                        r.exchange.as_str(),
                        r.routing_key.as_str()
                    ),
                });
            }
            Confirmation::Nack(None) => {
                return Err(CliError {
                    code: crate::error::exit::BROKER,
                    message: "the broker nacked the message".into(),
                });
            }
            Confirmation::Lost(e) => return Err(e.into()),
        }
    }
    eprintln!(
        "published {total} message(s){}",
        if args.no_confirm { "" } else { ", confirmed" }
    );
    conn.close().await?;
    Ok(())
}

fn properties(args: &PublishArgs) -> BasicProperties {
    let mut p = BasicProperties::default();
    let set = |v: &Option<String>| v.as_deref().map(str::to_owned);
    if let Some(v) = set(&args.content_type) {
        p = p.with_content_type(v.as_str());
    }
    if let Some(v) = set(&args.content_encoding) {
        p = p.with_content_encoding(v.as_str());
    }
    if let Some(v) = set(&args.correlation_id) {
        p = p.with_correlation_id(v.as_str());
    }
    if let Some(v) = set(&args.reply_to) {
        p = p.with_reply_to(v.as_str());
    }
    if let Some(v) = set(&args.expiration) {
        p = p.with_expiration(v.as_str());
    }
    if let Some(v) = set(&args.message_id) {
        p = p.with_message_id(v.as_str());
    }
    if let Some(v) = set(&args.kind) {
        p = p.with_kind(v.as_str());
    }
    if let Some(v) = set(&args.app_id) {
        p = p.with_app_id(v.as_str());
    }
    if let Some(v) = args.priority {
        p = p.with_priority(v);
    }
    if args.persistent {
        p = p.with_delivery_mode(2);
    }
    if !args.headers.is_empty() {
        p = p.with_headers(table(&args.headers));
    }
    p
}

pub async fn consume(args: ConsumeArgs) -> Result<(), CliError> {
    let (conn, ch) = channel(&args.conn).await?;
    if args.ack != AckMode::Auto {
        ch.basic_qos(args.prefetch, BasicQosOptions::default())
            .await?;
    }
    let options = BasicConsumeOptions {
        no_ack: args.ack == AckMode::Auto,
        ..Default::default()
    };
    let mut consumer = ch.basic_consume(&args.queue, "", options).await?;
    let mut seen = 0u64;
    let idle = args.timeout.map(Duration::from_secs_f64);
    while args.count.is_none_or(|c| seen < c) {
        let next = match idle {
            Some(idle) => match tokio::time::timeout(idle, consumer.next()).await {
                Ok(next) => next,
                Err(_) => break,
            },
            None => consumer.next().await,
        };
        let Some(delivery) = next else { break };
        let delivery = delivery?;
        seen += 1;
        print_delivery(&delivery, args.json)?;
        match args.ack {
            AckMode::Auto => {}
            AckMode::Ack => delivery.ack()?,
            AckMode::Reject => delivery.reject(false)?,
            AckMode::Requeue => delivery.nack(true)?,
        }
    }
    conn.close().await?;
    match args.count {
        Some(c) if seen < c => Err(CliError::no_message(format!(
            "got {seen} of {c} message(s) before the timeout"
        ))),
        _ => Ok(()),
    }
}

pub async fn get(args: GetArgs) -> Result<(), CliError> {
    let (conn, ch) = channel(&args.conn).await?;
    let message = ch
        .basic_get(&args.queue, BasicGetOptions::default())
        .await?;
    let Some(delivery) = message else {
        conn.close().await?;
        return Err(CliError::no_message(format!(
            "queue {:?} is empty",
            args.queue
        )));
    };
    print_delivery(&delivery, args.json)?;
    if args.requeue {
        delivery.nack(true)?;
    } else {
        delivery.ack()?;
    }
    conn.close().await?;
    Ok(())
}

pub async fn declare(entity: Entity) -> Result<(), CliError> {
    match entity {
        Entity::Queue(q) => {
            let (conn, ch) = channel(&q.conn).await?;
            let mut arguments = table(&q.arguments);
            if let Some(kind) = &q.kind {
                arguments = arguments.with("x-queue-type", kind.as_str());
            }
            let options = QueueDeclareOptions {
                durable: q.durable,
                auto_delete: q.auto_delete,
                ..Default::default()
            };
            let info = ch
                .queue_declare(
                    &q.name,
                    QueueDeclareOptions {
                        arguments,
                        ..options
                    },
                )
                .await?;
            println!(
                "queue {} declared ({} message(s), {} consumer(s))",
                info.name.as_str(),
                info.message_count,
                info.consumer_count
            );
            conn.close().await?;
        }
        Entity::Exchange(e) => {
            let (conn, ch) = channel(&e.conn).await?;
            let options = ExchangeDeclareOptions {
                durable: e.durable,
                auto_delete: e.auto_delete,
                ..Default::default()
            };
            ch.exchange_declare(
                &e.name,
                &e.kind,
                ExchangeDeclareOptions {
                    arguments: table(&e.arguments),
                    ..options
                },
            )
            .await?;
            println!("exchange {} ({}) declared", e.name, e.kind);
            conn.close().await?;
        }
    }
    Ok(())
}

pub async fn delete(entity: Entity) -> Result<(), CliError> {
    match entity {
        Entity::Queue(q) => {
            let (conn, ch) = channel(&q.conn).await?;
            let options = QueueDeleteOptions {
                if_unused: q.if_unused,
                if_empty: q.if_empty,
                ..Default::default()
            };
            let n = ch.queue_delete(&q.name, options).await?;
            println!("queue {} deleted ({n} message(s) with it)", q.name);
            conn.close().await?;
        }
        Entity::Exchange(e) => {
            let (conn, ch) = channel(&e.conn).await?;
            let options = ExchangeDeleteOptions {
                if_unused: e.if_unused,
                ..Default::default()
            };
            ch.exchange_delete(&e.name, options).await?;
            println!("exchange {} deleted", e.name);
            conn.close().await?;
        }
    }
    Ok(())
}

pub async fn bind(args: BindArgs, unbind: bool) -> Result<(), CliError> {
    let (conn, ch) = channel(&args.conn).await?;
    let arguments = table(&args.arguments);
    let (key, source) = (&args.routing_key, &args.exchange);
    let destination = match (&args.queue, &args.to_exchange) {
        (Some(queue), _) => {
            if unbind {
                ch.queue_unbind(queue, source, key, QueueUnbindOptions { arguments })
                    .await?;
            } else {
                ch.queue_bind(
                    queue,
                    source,
                    key,
                    QueueBindOptions {
                        arguments,
                        ..Default::default()
                    },
                )
                .await?;
            }
            format!("queue {queue}")
        }
        (None, Some(dest)) => {
            let options = ExchangeBindOptions {
                arguments,
                ..Default::default()
            };
            if unbind {
                ch.exchange_unbind(dest, source, key, options).await?;
            } else {
                ch.exchange_bind(dest, source, key, options).await?;
            }
            format!("exchange {dest}")
        }
        (None, None) => return Err(CliError::other("give --queue or --to-exchange")),
    };
    println!(
        "{} exchange {source} {} {destination} with key {key:?}",
        if unbind { "unbound" } else { "bound" },
        if unbind { "from" } else { "to" },
    );
    conn.close().await?;
    Ok(())
}

fn print_delivery(d: &Delivery, json: bool) -> Result<(), CliError> {
    let mut out = std::io::stdout().lock();
    if json {
        serde_json::to_writer(&mut out, &delivery_json(d)).map_err(std::io::Error::from)?;
        writeln!(out)?;
    } else {
        writeln!(
            out,
            "--- delivery {} from exchange {:?}, routing key {:?}{}",
            d.delivery_tag.0,
            d.exchange.as_str(),
            d.routing_key.as_str(),
            if d.redelivered { " (redelivered)" } else { "" }
        )?;
        let props = properties_json(&d.properties);
        if !props.is_empty() {
            writeln!(out, "properties: {}", Value::Object(props))?;
        }
        match std::str::from_utf8(&d.body) {
            Ok(text) => writeln!(out, "{text}")?,
            Err(_) => writeln!(out, "({} bytes, not UTF-8) {}", d.body.len(), hex(&d.body))?,
        }
    }
    out.flush()?;
    Ok(())
}

/// One delivery as JSON: `delivery_tag`, `exchange`, `routing_key`, `redelivered`,
/// `properties` (present ones only), and `body` (UTF-8) or `body_hex`.
fn delivery_json(d: &Delivery) -> Value {
    let mut v = json!({
        "delivery_tag": d.delivery_tag.0,
        "exchange": d.exchange.as_str(),
        "routing_key": d.routing_key.as_str(),
        "redelivered": d.redelivered,
        "properties": Value::Object(properties_json(&d.properties)),
    });
    match std::str::from_utf8(&d.body) {
        Ok(text) => v["body"] = json!(text),
        Err(_) => v["body_hex"] = json!(hex(&d.body)),
    }
    if let Some(n) = d.message_count() {
        v["message_count"] = json!(n);
    }
    v
}

fn properties_json(p: &BasicProperties) -> Map<String, Value> {
    let mut m = Map::new();
    let strings = [
        ("content_type", p.content_type()),
        ("content_encoding", p.content_encoding()),
        ("correlation_id", p.correlation_id()),
        ("reply_to", p.reply_to()),
        ("expiration", p.expiration()),
        ("message_id", p.message_id()),
        ("type", p.kind()),
        ("user_id", p.user_id()),
        ("app_id", p.app_id()),
        ("cluster_id", p.cluster_id()),
    ];
    for (name, value) in strings {
        if let Some(v) = value {
            m.insert(name.into(), json!(v));
        }
    }
    if let Some(v) = p.delivery_mode() {
        m.insert("delivery_mode".into(), json!(v));
    }
    if let Some(v) = p.priority() {
        m.insert("priority".into(), json!(v));
    }
    if let Some(v) = p.timestamp() {
        m.insert("timestamp".into(), json!(v));
    }
    if let Some(h) = p.headers() {
        m.insert("headers".into(), table_json(&h));
    }
    m
}

fn table_json(t: &FieldTable) -> Value {
    Value::Object(
        t.iter()
            .map(|(k, v)| (k.as_str().to_owned(), value_json(v)))
            .collect(),
    )
}

fn value_json(v: &FieldValue) -> Value {
    match v {
        FieldValue::Bool(b) => json!(b),
        FieldValue::I8(n) => json!(n),
        FieldValue::U8(n) => json!(n),
        FieldValue::I16(n) => json!(n),
        FieldValue::U16(n) => json!(n),
        FieldValue::I32(n) => json!(n),
        FieldValue::U32(n) => json!(n),
        FieldValue::I64(n) | FieldValue::I64L(n) => json!(n),
        FieldValue::F32(n) => json!(n),
        FieldValue::F64(n) => json!(n),
        FieldValue::Decimal(d) => json!(f64::from(d.value) / 10f64.powi(i32::from(d.scale))),
        FieldValue::LongString(s) => match s.as_str() {
            Some(text) => json!(text),
            None => json!(hex(&s.0)),
        },
        FieldValue::ByteArray(b) => json!(hex(b)),
        FieldValue::Timestamp(t) => json!(t),
        FieldValue::Table(t) => table_json(t),
        FieldValue::Array(a) => Value::Array(a.0.iter().map(value_json).collect()),
        // Void, and kinds a later version may add.
        _ => Value::Null,
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
