//! The TLS scenario text, written once: `amqps://`, TLS settings from the URI and from code,
//! SASL EXTERNAL with a client certificate, `verify_none`, `connection.update-secret`, and
//! every way a TLS connection should fail (promptly, with a typed error). Expanded beside
//! [`scenarios!`](super::scenarios), in the same modules (it uses the main text's helpers),
//! with the same rules, against dedicated nodes
//! ([`crate::node`]): the binary's shared TLS node (`env.tls_node()`) and, for one scenario,
//! its shared node with an expired certificate (`env.expired_cert_node()`). A wrong host name
//! is checked with `server_name_indication` on the shared node, so a test binary starts two
//! nodes, however many adapters or runtimes it runs the scenarios through.
//!
//! rustfmt does not format macro bodies: keep the code formatted as rustfmt would
//! (`max_width = 88` for the body, which sits 12 columns in).

macro_rules! tls_scenarios {
    ($mode:ident) => {
        $mode! {
            /// `ConnectOptions` parsed from `uri`, with a unique `connection_name`.
            fn options(env: &Env, uri: &str) -> ConnectOptions {
                let mut options =
                    ConnectOptions::parse(uri).unwrap_or_else(|e| panic!("{uri}: {e}"));
                options.config.connection_name = Some(env.connection_name());
                options
            }

            /// Connects with `options`; panics if that fails.
            async fn connect_ok(env: &Env, options: ConnectOptions) -> Connection {
                let shown = options.uri.to_string();
                env.try_connect(options)
                    .await
                    .unwrap_or_else(|e| panic!("cannot connect to {shown}: {e}"))
            }

            /// Connects to `uri`, expecting a failure within [`PROMPT`], and returns it.
            async fn connect_err(env: &Env, uri: &str) -> ConnectError {
                let started = Instant::now();
                let result = env.try_connect(options(env, uri)).await;
                let elapsed = started.elapsed();
                let err = match result {
                    Ok(_) => panic!("connected to {uri}, but a failure was expected"),
                    Err(e) => e,
                };
                assert!(elapsed < PROMPT, "took {elapsed:?} to fail with: {err}");
                eprintln!("failed as expected after {elapsed:?}: {err}");
                err
            }

            /// Declares an exclusive queue, publishes with confirms, consumes and acks one
            /// message (with the helpers of the main text, expanded in the same module).
            async fn round_trip(env: &Env, conn: &Connection, body: &str) {
                let ch = conn.open_channel().await.expect("open channel");
                let queue = declare_private_queue(&ch).await;
                ch.confirm_select(ConfirmSelectOptions::default())
                    .await
                    .expect("confirm.select");
                publish(&ch, "", &queue, body).await;
                assert!(ch.wait_for_confirms().await.expect("confirms"), "a nack");
                let mut consumer = consume(&ch, &queue, false).await;
                let delivery = env.recv(&mut consumer).await;
                assert_eq!(text(&delivery.body), body);
                delivery.ack().expect("ack");
            }
        }

        $mode! {
            /// Publish and consume over `amqps://`, the CA file given in the URI; then
            /// `connection.update-secret`, which RabbitMQ 3.10's internal backend (no
            /// expiring credentials) accepts, the connection staying usable.
            pub async fn tls_publish_consume_and_update_secret(env: Env) {
                let node = env.tls_node().await;
                let conn = connect_ok(&env, options(&env, &tls_uri(node, ""))).await;
                round_trip(&env, &conn, "over TLS").await;
                conn.update_secret(b"guest", "rotation")
                    .await
                    .expect("update-secret");
                round_trip(&env, &conn, "after update-secret").await;
                conn.close().await.expect("close");
            }
        }

        $mode! {
            /// TLS settings given in code (CA as PEM bytes, CA file), to an IP address (an IP
            /// SAN of the server certificate).
            pub async fn tls_settings_in_code(env: Env) {
                let node = env.tls_node().await;
                let uri = format!("amqps://guest:guest@127.0.0.1:{}/%2f", node.tls_port());
                let pem = std::fs::read(node.ca_cert_path()).expect("read the CA");
                let tls = TlsOptions::new().with_ca_pem(pem);
                let conn = connect_ok(&env, options(&env, &uri).with_tls(tls)).await;
                round_trip(&env, &conn, "by IP, CA in code").await;
                conn.close().await.expect("close");

                let tls = TlsOptions::new().with_ca_file(node.ca_cert_path());
                let conn = connect_ok(&env, options(&env, &uri).with_tls(tls)).await;
                round_trip(&env, &conn, "CA file in code").await;
                conn.close().await.expect("close");
            }
        }

        $mode! {
            /// SASL EXTERNAL: no password anywhere, the broker takes the user name
            /// (CN=guest) from the client certificate.
            pub async fn tls_external_login_with_a_client_certificate(env: Env) {
                let node = env.tls_node().await;
                let query = format!(
                    "cacertfile={}&certfile={}&keyfile={}&auth_mechanism=external",
                    path_str(node.ca_cert_path()),
                    path_str(node.client_cert_path()),
                    path_str(node.client_key_path()),
                );
                let uri = format!("amqps://localhost:{}/%2f?{query}", node.tls_port());
                let options = options(&env, &uri);
                assert_eq!(options.config.sasl.name(), "EXTERNAL");
                let name = options.config.connection_name.clone().expect("a name");
                let conn = connect_ok(&env, options).await;
                round_trip(&env, &conn, "EXTERNAL").await;
                let args = [
                    "list_connections",
                    "client_properties",
                    "user",
                    "auth_mechanism",
                    "ssl",
                ];
                let listed = env.node_rabbitmqctl(node, &args).await;
                let line = listed
                    .lines()
                    .find(|l| l.contains(name.as_str()))
                    .unwrap_or_else(|| panic!("connection not listed:\n{listed}"));
                assert!(line.contains("\tguest\tEXTERNAL\ttrue"), "{line}");
                conn.close().await.expect("close");
            }
        }

        $mode! {
            /// An expired server certificate is rejected; `verify=verify_none` (URI) and
            /// `danger_accept_invalid_certs` (code) accept it.
            pub async fn tls_expired_certificate_unless_verification_is_off(env: Env) {
                let node = env.expired_cert_node().await;
                let err = connect_err(&env, &tls_uri(node, "")).await;
                assert_eq!(tls_kind(&err), TlsErrorKind::CertificateRejected, "{err}");
                assert_eq!(err.kind(), ErrorKind::Tls);
                assert!(err.to_string().contains("expired"), "{err}");

                let uri = format!("{}?verify=verify_none", node.tls_uri());
                let conn = connect_ok(&env, options(&env, &uri)).await;
                round_trip(&env, &conn, "unverified").await;
                conn.close().await.expect("close");

                let tls = TlsOptions::new().danger_accept_invalid_certs();
                let options = options(&env, &node.tls_uri()).with_tls(tls);
                let conn = connect_ok(&env, options).await;
                round_trip(&env, &conn, "unverified, in code").await;
                conn.close().await.expect("close");
            }
        }

        $mode! {
            /// A CA that did not issue the server certificate, and no CA file at all (the
            /// webpki roots do not know the test CA either).
            pub async fn tls_unknown_ca_is_rejected(env: Env) {
                let node = env.tls_node().await;
                let other_ca = path_str(node.other_ca_path());
                let uri = format!("{}?cacertfile={other_ca}", node.tls_uri());
                for uri in [uri, node.tls_uri()] {
                    let err = connect_err(&env, &uri).await;
                    assert_eq!(tls_kind(&err), TlsErrorKind::CertificateRejected, "{err}");
                    assert!(err.to_string().contains("UnknownIssuer"), "{err}");
                }
            }
        }

        $mode! {
            /// The server certificate is for localhost/127.0.0.1: verifying it against
            /// another name (`server_name_indication`) fails, against one of its names works.
            pub async fn tls_wrong_host_name_is_rejected(env: Env) {
                let node = env.tls_node().await;
                let uri = tls_uri(node, "&server_name_indication=wrong-host.invalid");
                let err = connect_err(&env, &uri).await;
                assert_eq!(tls_kind(&err), TlsErrorKind::CertificateRejected, "{err}");
                let text = err.to_string();
                assert!(text.contains("not valid for name"), "{text}");
                assert!(text.contains("wrong-host.invalid"), "{text}");

                let ca = path_str(node.ca_cert_path());
                let query = format!("cacertfile={ca}&server_name_indication=localhost");
                let uri = format!("amqps://guest:guest@127.0.0.1:{}/%2f?{query}", node.tls_port());
                let conn = connect_ok(&env, options(&env, &uri)).await;
                conn.close().await.expect("close");
            }
        }

        $mode! {
            /// `amqp://` to the TLS port: the TLS alert is recognised.
            pub async fn tls_plain_amqp_to_the_tls_port_fails_promptly(env: Env) {
                let node = env.tls_node().await;
                let uri = format!("amqp://guest:guest@127.0.0.1:{}/%2f", node.tls_port());
                let err = connect_err(&env, &uri).await;
                assert!(
                    matches!(
                        err.kind(),
                        ErrorKind::ConnectionBroken | ErrorKind::FrameError | ErrorKind::Tls
                    ),
                    "{:?}: {err}",
                    err.kind()
                );
                assert!(err.to_string().contains("amqps://"), "{err}");
            }
        }

        $mode! {
            /// `amqps://` to the plain port: not TLS.
            pub async fn tls_to_the_plain_port_fails_promptly(env: Env) {
                let node = env.tls_node().await;
                let uri = format!(
                    "amqps://guest:guest@localhost:{}/%2f?cacertfile={}",
                    node.amqp_port(),
                    path_str(node.ca_cert_path())
                );
                let err = connect_err(&env, &uri).await;
                assert_eq!(tls_kind(&err), TlsErrorKind::NotTls, "{err}");
                assert!(err.to_string().contains("plain amqp:// port"), "{err}");
            }
        }

        $mode! {
            /// EXTERNAL without a client certificate: refused, with a hint.
            pub async fn tls_external_without_a_client_certificate(env: Env) {
                let node = env.tls_node().await;
                let uri = tls_uri(node, "&auth_mechanism=external");
                let err = connect_err(&env, &uri).await;
                assert_eq!(err.kind(), ErrorKind::Authentication, "{err}");
                let text = err.to_string();
                assert!(text.contains("EXTERNAL"), "{text}");
                assert!(text.contains("client certificate"), "{text}");
            }
        }

        $mode! {
            /// A client certificate from a CA the broker does not trust. With TLS 1.3 the
            /// broker's verdict comes after our side of the handshake finished, so it can
            /// surface as a TLS error or as the broken AMQP handshake.
            pub async fn tls_client_certificate_from_an_unknown_ca(env: Env) {
                let node = env.tls_node().await;
                let pki = node.pki();
                let extra = format!(
                    "&certfile={}&keyfile={}&auth_mechanism=external",
                    path_str(pki.other_client_cert_path()),
                    path_str(pki.other_client_key_path())
                );
                let err = connect_err(&env, &tls_uri(node, &extra)).await;
                let text = err.to_string();
                assert!(
                    matches!(err.kind(), ErrorKind::Tls | ErrorKind::ConnectionBroken),
                    "{:?}: {text}",
                    err.kind()
                );
                assert!(text.contains("certificate"), "{text}");
            }
        }

        $mode! {
            /// Unusable TLS settings fail before dialling (port 1: nothing listens, so only
            /// a settings error explains a prompt TLS error).
            pub async fn tls_unusable_settings_fail_before_dialling(env: Env) {
                let cases = [
                    ("cacertfile=/nonexistent/ca.pem", "/nonexistent/ca.pem"),
                    ("certfile=/nonexistent/client.pem", "keyfile"),
                    (
                        "certfile=/nonexistent/c.pem&keyfile=/nonexistent/k.pem",
                        "/nonexistent/c.pem",
                    ),
                ];
                for (query, needle) in cases {
                    let err = connect_err(&env, &format!("amqps://127.0.0.1:1/?{query}")).await;
                    assert_eq!(tls_kind(&err), TlsErrorKind::Config, "{err}");
                    assert_eq!(err.kind(), ErrorKind::Usage);
                    assert!(err.to_string().contains(needle), "{err}");
                }
            }
        }
    };
}
