//! The handshake: `start`/`start-ok` (SASL), `secure`, `tune`/`tune-ok`, `open`/`open-ok`,
//! and a close from the broker before the connection is open.

use std::time::Instant;

use super::inbound::server_reason;
use super::{Connection, Error, Event, HandshakeStep, Lifecycle, Misuse, Tuning, short};
use crate::error::ReplyCode;
use crate::frame::{Frame, MIN_FRAME_MAX};
use crate::spec::*;

impl Connection {
    pub(super) fn on_handshake_frame(&mut self, step: HandshakeStep, frame: Frame, now: Instant) {
        let m = match frame {
            Frame::Heartbeat => return,
            Frame::Method(0, m) => m,
            other => {
                return self.violation(
                    ReplyCode::UNEXPECTED_FRAME,
                    format!(
                        "unexpected frame on channel {} during the handshake",
                        other.channel()
                    ),
                    now,
                );
            }
        };
        match (step, m) {
            (HandshakeStep::AwaitingStart, Method::ConnectionStart(start)) => {
                self.on_start(start, now)
            }
            (HandshakeStep::Authenticating, Method::ConnectionSecure(secure)) => {
                match self.config.sasl.challenge(&secure.challenge) {
                    Ok(response) => {
                        let _ = self.send_method(
                            0,
                            &ConnectionSecureOk {
                                response: response.into(),
                            }
                            .into(),
                        );
                    }
                    Err(e) => self.finish(Some(Error::Authentication(e))),
                }
            }
            (HandshakeStep::Authenticating, Method::ConnectionTune(tune)) => {
                self.on_tune(tune, now)
            }
            (HandshakeStep::Opening, Method::ConnectionOpenOk(_)) => {
                self.lifecycle = Lifecycle::Open;
                if self.recovery.is_some() {
                    // A recovered connection: `Recovered` follows the replay instead.
                    return self.begin_replay(now);
                }
                self.events.push_back(Event::Connected {
                    server_properties: self.server_properties.clone(),
                    tuning: self.tuning,
                });
            }
            (state, Method::ConnectionClose(close)) => {
                let _ = self.send_method(0, &ConnectionCloseOk {}.into());
                let reason = server_reason(
                    close.reply_code,
                    &close.reply_text,
                    close.class_id,
                    close.method_id,
                );
                let error = match (state, reason.code) {
                    (HandshakeStep::Authenticating, ReplyCode::ACCESS_REFUSED) => {
                        let mut text = reason.text.to_string();
                        if self.config.sasl.name() == "EXTERNAL" {
                            text.push_str(
                                " (EXTERNAL logs in with the TLS client certificate: connect \
                                 with amqps:// and a certfile/keyfile whose subject names an \
                                 existing user)",
                            );
                        }
                        Error::Authentication(text)
                    }
                    (
                        HandshakeStep::Opening,
                        ReplyCode::NOT_ALLOWED | ReplyCode::ACCESS_REFUSED,
                    ) => Error::VhostAccessRefused {
                        vhost: self.config.vhost.clone(),
                        text: reason.text.to_string(),
                    },
                    _ => Error::ConnectionClosed(reason),
                };
                // During a recovery a broker still booting may close with 320: another try.
                self.lost(error, now);
            }
            (_, m) => self.violation(
                ReplyCode::COMMAND_INVALID,
                format!("unexpected {} during the handshake", m.name()),
                now,
            ),
        }
    }

    fn on_start(&mut self, start: ConnectionStart, now: Instant) {
        if (start.version_major, start.version_minor) != (0, 9) {
            return self.violation(
                ReplyCode::NOT_IMPLEMENTED,
                format!(
                    "server speaks AMQP {}-{}, not 0-9",
                    start.version_major, start.version_minor
                ),
                now,
            );
        }
        let mechanism = self.config.sasl.name().to_owned();
        let offered = start
            .mechanisms
            .as_str()
            .is_some_and(|list| list.split(' ').any(|m| m == mechanism));
        if !offered {
            let list = String::from_utf8_lossy(&start.mechanisms).into_owned();
            // RabbitMQ offers EXTERNAL only on TLS connections that presented a client
            // certificate it accepted (and with rabbitmq_auth_mechanism_ssl enabled).
            let hint = if mechanism == "EXTERNAL" {
                "; EXTERNAL needs an amqps:// connection with a client certificate \
                 (certfile/keyfile) that the broker accepted"
            } else {
                ""
            };
            return self.finish(Some(Error::Authentication(format!(
                "the broker does not offer mechanism {mechanism} (it offers: {list}){hint}"
            ))));
        }
        let response = match self.config.sasl.initial_response() {
            Ok(r) => r,
            Err(e) => return self.finish(Some(Error::Authentication(e))),
        };
        let (Ok(mechanism), Ok(locale)) = (short(&mechanism), short(&self.config.locale)) else {
            return self.finish(Some(Error::Usage(Misuse::ConfigTooLong)));
        };
        self.server_properties = start.server_properties;
        let start_ok = ConnectionStartOk {
            client_properties: self.config.client_properties_table(),
            mechanism,
            response: response.into(),
            locale,
        };
        match self.send_method(0, &start_ok.into()) {
            Ok(()) => self.set_step(HandshakeStep::Authenticating),
            Err(e) => self.finish(Some(e)),
        }
    }

    fn on_tune(&mut self, tune: ConnectionTune, now: Instant) {
        if tune.frame_max != 0 && tune.frame_max < MIN_FRAME_MAX {
            return self.violation(
                ReplyCode::SYNTAX_ERROR,
                format!(
                    "frame_max {} is below the protocol minimum {MIN_FRAME_MAX}",
                    tune.frame_max
                ),
                now,
            );
        }
        // Lower of the two, where 0 means "no limit" and so yields to the other side.
        fn lower(ours: u32, theirs: u32) -> u32 {
            match (ours, theirs) {
                (0, t) => t,
                (o, 0) => o,
                (o, t) => o.min(t),
            }
        }
        let channel_max = lower(self.config.channel_max.into(), tune.channel_max.into()) as u16;
        // A configured limit below the protocol minimum is raised to it; 0 stays "no limit".
        let ours = match self.config.frame_max {
            0 => 0,
            n => n.max(MIN_FRAME_MAX),
        };
        let frame_max = lower(ours, tune.frame_max);
        // Heartbeat 0 from us means "disabled", not "no preference".
        let heartbeat = match self.config.heartbeat {
            0 => 0,
            ours => lower(ours.into(), tune.heartbeat.into()) as u16,
        };
        self.tuning = Tuning {
            channel_max,
            frame_max,
            heartbeat,
        };
        self.decoder.set_frame_max(frame_max);
        let tune_ok = ConnectionTuneOk {
            channel_max,
            frame_max,
            heartbeat,
        };
        let open = ConnectionOpen {
            virtual_host: match short(&self.config.vhost) {
                Ok(v) => v,
                Err(e) => return self.finish(Some(e)),
            },
            ..Default::default()
        };
        if let Err(e) = self
            .send_method(0, &tune_ok.into())
            .and_then(|()| self.send_method(0, &open.into()))
        {
            return self.finish(Some(e));
        }
        self.last_recv = now;
        self.set_step(HandshakeStep::Opening);
    }
}
