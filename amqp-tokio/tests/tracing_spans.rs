//! The client's tracing: each connection is an `amqp.connection` span carrying its name
//! (the `connection_name` client property), endpoint and virtual host, each channel an
//! `amqp.channel` span inside it carrying its number; lifecycle changes are events at
//! info/warn, byte counts at trace. Against the shared broker (127.0.0.1:5672, guest/guest);
//! fails when it is missing. A current-thread runtime runs the driver on the test's thread,
//! where the thread-local subscriber sees everything.

#[path = "common/capture.rs"]
mod capture;

use capture::Capture;

use amqp_tokio::{ConnectOptions, ErrorKind, QueueDeclareOptions};

fn lines_with<'a>(text: &'a str, needle: &str) -> Vec<&'a str> {
    text.lines().filter(|l| l.contains(needle)).collect()
}

#[tokio::test]
async fn connection_and_channel_spans_carry_name_endpoint_and_number() {
    let capture = Capture::default();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_ansi(false)
        .with_writer(capture.clone())
        .finish();
    let guard = tracing::subscriber::set_default(subscriber);

    let mut options = ConnectOptions::parse("amqp://guest:guest@127.0.0.1:5672/%2f").unwrap();
    options.config.connection_name = Some("span-check".into());
    let conn = amqp_tokio::connect_with(options).await.unwrap();
    let ch = conn.open_channel().await.unwrap();
    let passive = QueueDeclareOptions {
        passive: true,
        ..Default::default()
    };
    let err = ch
        .queue_declare("amqp-tracing-no-such-queue", passive)
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::NotFound);
    conn.close().await.unwrap();
    drop(guard);

    let text = capture.text();
    let span = r#"amqp.connection{name="span-check" endpoint=127.0.0.1:5672 vhost=/}"#;
    let connected = lines_with(&text, "amqp: connection established");
    assert_eq!(connected.len(), 1, "{text}");
    assert!(
        connected[0].contains(" INFO ") && connected[0].contains(span),
        "{text}"
    );
    assert!(connected[0].contains("product=RabbitMQ"), "{text}");

    let closed = lines_with(&text, "amqp: channel closed");
    assert_eq!(closed.len(), 1, "{text}");
    assert!(closed[0].contains(" WARN "), "{text}");
    assert!(
        closed[0].contains(&format!("{span}:amqp.channel{{channel=1}}")),
        "{text}"
    );
    assert!(closed[0].contains("404"), "{text}");

    let end = lines_with(&text, "amqp: connection closed by the client");
    assert!(
        end.len() == 1 && end[0].contains(" INFO ") && end[0].contains(span),
        "{text}"
    );
    assert!(
        lines_with(&text, "amqp: read")
            .iter()
            .any(|l| l.contains("TRACE") && l.contains("bytes=")),
        "{text}"
    );
    assert!(
        !text.contains("guest:guest"),
        "no credentials in the logs:\n{text}"
    );
}
