//! Feature `metrics`: a connection's counters reach the `metrics` crate's recorder, labelled
//! with the connection name, and agree with the handle's own snapshot. In memory, against the
//! scripted broker; `scripts/test.sh` runs it with `--features metrics`.
#![cfg(feature = "metrics")]

use amqp_client::{BasicProperties, BasicPublishOptions, ConfirmSelectOptions, ConnectionConfig};
use amqp_conformance::client::{ClientPair, Task};
use amqp_proto::{BasicAck, BasicNack, ConfirmSelectOk, ConnectionCloseOk, Method};
use metrics_util::debugging::{DebugValue, DebuggingRecorder};

/// A metric's name, labels and value as the recorder holds them.
type Recorded = (String, Vec<(String, String)>, DebugValue);

#[test]
fn counters_reach_the_recorder_with_the_connection_name() {
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    let handle_metrics = metrics::with_local_recorder(&recorder, || {
        let config = ConnectionConfig::default().with_connection_name("exported");
        let (mut pair, conn) = ClientPair::connected_with(config);
        let ch = pair.open_channel(&conn);
        let mut select = Task::spawn(ch.confirm_select(ConfirmSelectOptions::default()));
        assert!(matches!(pair.expect_method(1), Method::ConfirmSelect(_)));
        pair.send_method(1, ConfirmSelectOk {});
        select.expect_ready().unwrap();
        let properties = BasicProperties::default();
        for _ in 0..3 {
            Task::spawn(ch.basic_publish(
                "",
                "q",
                BasicPublishOptions::default(),
                &properties,
                &b"m"[..],
            ))
            .expect_ready()
            .unwrap();
            pair.expect_published(1);
        }
        pair.send_method(
            1,
            BasicAck {
                delivery_tag: 2,
                multiple: true,
            },
        );
        pair.send_method(
            1,
            BasicNack {
                delivery_tag: 3,
                multiple: false,
                requeue: false,
            },
        );
        // Closing records a last time, whatever the one-second pacing says.
        let mut close = Task::spawn(conn.close());
        assert!(matches!(pair.expect_method(0), Method::ConnectionClose(_)));
        pair.send_method(0, ConnectionCloseOk {});
        close.expect_ready().unwrap();
        conn.metrics()
    });
    assert_eq!(handle_metrics.publishes, 3);
    assert_eq!(handle_metrics.confirms_acked, 2);
    assert_eq!(handle_metrics.confirms_nacked, 1);

    let recorded: Vec<Recorded> = snapshotter
        .snapshot()
        .into_vec()
        .into_iter()
        .map(|(key, _, _, value)| {
            let labels = key
                .key()
                .labels()
                .map(|l| (l.key().to_owned(), l.value().to_owned()))
                .collect();
            (key.key().name().to_owned(), labels, value)
        })
        .collect();
    let counter = |name: &str| {
        let hits: Vec<_> = recorded.iter().filter(|(n, _, _)| n == name).collect();
        assert_eq!(hits.len(), 1, "{name} recorded once: {recorded:?}");
        assert_eq!(
            hits[0].1,
            vec![("connection".to_owned(), "exported".to_owned())],
            "{name}'s labels"
        );
        match hits[0].2 {
            DebugValue::Counter(v) => v,
            ref other => panic!("{name} is not a counter: {other:?}"),
        }
    };
    let m = &handle_metrics;
    assert_eq!(counter("amqp_publishes_total"), m.publishes);
    assert_eq!(counter("amqp_confirms_acked_total"), m.confirms_acked);
    assert_eq!(counter("amqp_confirms_nacked_total"), m.confirms_nacked);
    assert_eq!(counter("amqp_confirms_lost_total"), m.confirms_lost);
    assert_eq!(counter("amqp_frames_in_total"), m.frames_in);
    assert_eq!(counter("amqp_frames_out_total"), m.frames_out);
    assert_eq!(counter("amqp_bytes_in_total"), m.bytes_in);
    assert_eq!(counter("amqp_bytes_out_total"), m.bytes_out);
    assert_eq!(counter("amqp_deliveries_total"), m.deliveries);
    assert_eq!(counter("amqp_recoveries_total"), m.recoveries);
    assert!(m.frames_out > 0 && m.bytes_in > 0);
    let gauge = |name: &str| {
        recorded
            .iter()
            .find(|(n, _, _)| n == name)
            .map(|(_, _, v)| match v {
                DebugValue::Gauge(g) => g.into_inner(),
                other => panic!("{name} is not a gauge: {other:?}"),
            })
            .unwrap_or_else(|| panic!("{name} not recorded: {recorded:?}"))
    };
    assert_eq!(gauge("amqp_channels_open"), m.channels_open as f64);
    assert_eq!(gauge("amqp_consumers"), m.consumers as f64);
}
