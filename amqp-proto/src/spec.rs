//! Every AMQP 0-9-1 method, with RabbitMQ's extensions, written once as a table of facts.
//!
//! The `protocol!` table below is the only place a class id, method id, name, field layout,
//! synchronicity, content flag or expected reply is written. Structs, the [`Method`] enum,
//! encoding, decoding and the [`MethodInfo`] metadata are all generated from it, and a test
//! checks the table against the XML definitions in `shared/spec`.

use bytes::{BufMut, Bytes, BytesMut};

use crate::error::CodecError;
use crate::types::{FieldTable, LongString, SecretBytes, ShortString, WireField};
use crate::wire::{Reader, Writer};

/// A method's identity on the wire: its class id and method id.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct MethodId {
    /// The class (10 connection, 20 channel, 40 exchange, 50 queue, 60 basic, 85 confirm, 90 tx).
    pub class_id: u16,
    /// The method within the class.
    pub method_id: u16,
}

/// Facts about a method, derived from the protocol table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flag {
    /// The sender waits for one of the method's replies.
    Sync,
    /// The method is followed by a content header and body frames.
    Content,
    /// A server may send it to a client.
    ToClient,
    /// A client may send it to a server.
    ToServer,
}

const fn has(flags: &[Flag], f: Flag) -> bool {
    let mut i = 0;
    while i < flags.len() {
        if flags[i] as u8 == f as u8 {
            return true;
        }
        i += 1;
    }
    false
}

/// What the protocol table says about one method.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MethodInfo {
    /// Class and method id.
    pub id: MethodId,
    /// Dotted name as the spec writes it, e.g. `"queue.declare-ok"`.
    pub name: &'static str,
    /// Whether the sender waits for a reply (listed in `replies`).
    pub synchronous: bool,
    /// Whether content (header and body frames) follows the method frame.
    pub carries_content: bool,
    /// Whether a server may send it.
    pub to_client: bool,
    /// Whether a client may send it.
    pub to_server: bool,
    /// The methods that answer it.
    pub replies: &'static [MethodId],
    /// Field names and their Rust types, in wire order.
    pub fields: &'static [(&'static str, &'static str)],
}

impl MethodInfo {
    /// Whether `reply` is one of the answers this method expects.
    pub fn expects_reply(&self, reply: MethodId) -> bool {
        self.replies.contains(&reply)
    }
}

macro_rules! protocol {
    ($(
        class $class_id:literal {$(
            $(#[doc = $doc:literal])*
            $method_id:literal $Method:ident $name:literal [$($flag:ident)*] -> [$($Reply:ident)*] {
                $($field:ident : $ty:ty),* $(,)?
            }
        )*}
    )*) => {
        $($(
            $(#[doc = $doc])*
            #[doc = concat!("\n\n`", $name, "` (", stringify!($class_id), ", ", stringify!($method_id), ").")]
            #[derive(Debug, Clone, PartialEq, Default)]
            pub struct $Method {
                $(#[allow(missing_docs)] pub $field: $ty,)*
            }

            impl $Method {
                /// Class and method id.
                pub const ID: MethodId = MethodId { class_id: $class_id, method_id: $method_id };
                /// What the protocol table says about this method.
                pub const INFO: MethodInfo = MethodInfo {
                    id: Self::ID,
                    name: $name,
                    synchronous: has(&[$(Flag::$flag),*], Flag::Sync),
                    carries_content: has(&[$(Flag::$flag),*], Flag::Content),
                    to_client: has(&[$(Flag::$flag),*], Flag::ToClient),
                    to_server: has(&[$(Flag::$flag),*], Flag::ToServer),
                    replies: &[$($Reply::ID),*],
                    fields: &[$((stringify!($field), stringify!($ty))),*],
                };

                /// A copy that shares no buffer with the frame it was decoded from, so keeping
                /// it does not keep that frame's read buffer alive.
                pub fn detach(&self) -> Self {
                    $Method { $($field: WireField::detach(&self.$field),)* }
                }

                #[allow(unused_variables, unused_mut)]
                fn read_fields(r: &mut Reader<'_>) -> Result<Self, CodecError> {
                    Ok($Method { $($field: <$ty as WireField>::read(r)?,)* })
                }

                #[allow(unused_variables, unused_mut)]
                fn write_fields(&self, w: &mut Writer<'_>) -> Result<(), CodecError> {
                    $(WireField::write(&self.$field, w)?;)*
                    Ok(())
                }
            }

            impl From<$Method> for Method {
                fn from(m: $Method) -> Method {
                    Method::$Method(m)
                }
            }
        )*)*

        /// Any AMQP method, as carried by a method frame.
        #[derive(Debug, Clone, PartialEq)]
        #[allow(missing_docs)]
        pub enum Method {
            $($($Method($Method),)*)*
        }

        /// Every method in the protocol table, in table order.
        pub const METHODS: &[MethodInfo] = &[$($($Method::INFO,)*)*];

        impl Method {
            /// What the protocol table says about this method.
            pub fn info(&self) -> &'static MethodInfo {
                match self {
                    $($(Method::$Method(_) => &$Method::INFO,)*)*
                }
            }

            /// The table entry for a class and method id.
            pub fn info_for(id: MethodId) -> Option<&'static MethodInfo> {
                match (id.class_id, id.method_id) {
                    $($(($class_id, $method_id) => Some(&$Method::INFO),)*)*
                    _ => None,
                }
            }

            /// Decodes a method frame payload: class id, method id and the fields.
            pub fn decode(payload: &Bytes) -> Result<Method, CodecError> {
                Self::read(&mut Reader::new(payload))
            }

            /// Decodes the method frame payload `r` covers, all of it.
            pub(crate) fn read(r: &mut Reader<'_>) -> Result<Method, CodecError> {
                let class_id = r.u16("class id")?;
                let method_id = r.u16("method id")?;
                let m = match (class_id, method_id) {
                    $($(($class_id, $method_id) => Method::$Method($Method::read_fields(r)?),)*)*
                    _ => return Err(CodecError::UnknownMethod { class_id, method_id }),
                };
                r.finish("method fields")?;
                Ok(m)
            }

            /// Appends the method frame payload: class id, method id and the fields.
            pub fn encode(&self, out: &mut BytesMut) -> Result<(), CodecError> {
                // Class id then method id, big-endian: one append instead of two, a constant
                // in each arm rather than a look-up of the method's table entry.
                match self {
                    $($(Method::$Method(m) => {
                        out.put_u32(($class_id as u32) << 16 | $method_id as u32);
                        m.write_fields(&mut Writer::new(out))
                    })*)*
                }
            }
        }
    };
}

impl Method {
    /// Class and method id.
    pub fn id(&self) -> MethodId {
        self.info().id
    }

    /// Dotted name, e.g. `"basic.deliver"`.
    pub fn name(&self) -> &'static str {
        self.info().name
    }

    /// Whether the sender waits for a reply.
    pub fn is_synchronous(&self) -> bool {
        self.info().synchronous
    }

    /// Whether content frames follow this method.
    pub fn carries_content(&self) -> bool {
        self.info().carries_content
    }
}

protocol! {
    class 10 {
        10 ConnectionStart "connection.start" [Sync ToClient] -> [ConnectionStartOk] {
            version_major: u8, version_minor: u8, server_properties: FieldTable,
            mechanisms: LongString, locales: LongString,
        }
        11 ConnectionStartOk "connection.start-ok" [Sync ToServer] -> [] {
            client_properties: FieldTable, mechanism: ShortString, response: SecretBytes,
            locale: ShortString,
        }
        20 ConnectionSecure "connection.secure" [Sync ToClient] -> [ConnectionSecureOk] {
            challenge: LongString,
        }
        21 ConnectionSecureOk "connection.secure-ok" [Sync ToServer] -> [] { response: SecretBytes }
        30 ConnectionTune "connection.tune" [Sync ToClient] -> [ConnectionTuneOk] {
            channel_max: u16, frame_max: u32, heartbeat: u16,
        }
        31 ConnectionTuneOk "connection.tune-ok" [Sync ToServer] -> [] {
            channel_max: u16, frame_max: u32, heartbeat: u16,
        }
        40 ConnectionOpen "connection.open" [Sync ToServer] -> [ConnectionOpenOk] {
            virtual_host: ShortString, reserved_1: ShortString, reserved_2: bool,
        }
        41 ConnectionOpenOk "connection.open-ok" [Sync ToClient] -> [] { reserved_1: ShortString }
        50 ConnectionClose "connection.close" [Sync ToClient ToServer] -> [ConnectionCloseOk] {
            reply_code: u16, reply_text: ShortString, class_id: u16, method_id: u16,
        }
        51 ConnectionCloseOk "connection.close-ok" [Sync ToClient ToServer] -> [] {}
        /// RabbitMQ extension: the broker stopped reading from publishers (resource alarm).
        60 ConnectionBlocked "connection.blocked" [ToClient] -> [] { reason: ShortString }
        /// RabbitMQ extension: the alarm cleared.
        61 ConnectionUnblocked "connection.unblocked" [ToClient] -> [] {}
        /// RabbitMQ extension: refresh credentials (e.g. an OAuth2 token) on a live connection.
        70 ConnectionUpdateSecret "connection.update-secret" [Sync ToServer] -> [ConnectionUpdateSecretOk] {
            new_secret: SecretBytes, reason: ShortString,
        }
        71 ConnectionUpdateSecretOk "connection.update-secret-ok" [Sync ToClient] -> [] {}
    }
    class 20 {
        10 ChannelOpen "channel.open" [Sync ToServer] -> [ChannelOpenOk] { reserved_1: ShortString }
        11 ChannelOpenOk "channel.open-ok" [Sync ToClient] -> [] { reserved_1: LongString }
        20 ChannelFlow "channel.flow" [Sync ToClient ToServer] -> [ChannelFlowOk] { active: bool }
        21 ChannelFlowOk "channel.flow-ok" [ToClient ToServer] -> [] { active: bool }
        40 ChannelClose "channel.close" [Sync ToClient ToServer] -> [ChannelCloseOk] {
            reply_code: u16, reply_text: ShortString, class_id: u16, method_id: u16,
        }
        41 ChannelCloseOk "channel.close-ok" [Sync ToClient ToServer] -> [] {}
    }
    class 40 {
        10 ExchangeDeclare "exchange.declare" [Sync ToServer] -> [ExchangeDeclareOk] {
            reserved_1: u16, exchange: ShortString, kind: ShortString, passive: bool,
            durable: bool, auto_delete: bool, internal: bool, no_wait: bool,
            arguments: FieldTable,
        }
        11 ExchangeDeclareOk "exchange.declare-ok" [Sync ToClient] -> [] {}
        20 ExchangeDelete "exchange.delete" [Sync ToServer] -> [ExchangeDeleteOk] {
            reserved_1: u16, exchange: ShortString, if_unused: bool, no_wait: bool,
        }
        21 ExchangeDeleteOk "exchange.delete-ok" [Sync ToClient] -> [] {}
        30 ExchangeBind "exchange.bind" [Sync ToServer] -> [ExchangeBindOk] {
            reserved_1: u16, destination: ShortString, source: ShortString,
            routing_key: ShortString, no_wait: bool, arguments: FieldTable,
        }
        31 ExchangeBindOk "exchange.bind-ok" [Sync ToClient] -> [] {}
        40 ExchangeUnbind "exchange.unbind" [Sync ToServer] -> [ExchangeUnbindOk] {
            reserved_1: u16, destination: ShortString, source: ShortString,
            routing_key: ShortString, no_wait: bool, arguments: FieldTable,
        }
        51 ExchangeUnbindOk "exchange.unbind-ok" [Sync ToClient] -> [] {}
    }
    class 50 {
        10 QueueDeclare "queue.declare" [Sync ToServer] -> [QueueDeclareOk] {
            reserved_1: u16, queue: ShortString, passive: bool, durable: bool, exclusive: bool,
            auto_delete: bool, no_wait: bool, arguments: FieldTable,
        }
        11 QueueDeclareOk "queue.declare-ok" [Sync ToClient] -> [] {
            queue: ShortString, message_count: u32, consumer_count: u32,
        }
        20 QueueBind "queue.bind" [Sync ToServer] -> [QueueBindOk] {
            reserved_1: u16, queue: ShortString, exchange: ShortString, routing_key: ShortString,
            no_wait: bool, arguments: FieldTable,
        }
        21 QueueBindOk "queue.bind-ok" [Sync ToClient] -> [] {}
        30 QueuePurge "queue.purge" [Sync ToServer] -> [QueuePurgeOk] {
            reserved_1: u16, queue: ShortString, no_wait: bool,
        }
        31 QueuePurgeOk "queue.purge-ok" [Sync ToClient] -> [] { message_count: u32 }
        40 QueueDelete "queue.delete" [Sync ToServer] -> [QueueDeleteOk] {
            reserved_1: u16, queue: ShortString, if_unused: bool, if_empty: bool, no_wait: bool,
        }
        41 QueueDeleteOk "queue.delete-ok" [Sync ToClient] -> [] { message_count: u32 }
        50 QueueUnbind "queue.unbind" [Sync ToServer] -> [QueueUnbindOk] {
            reserved_1: u16, queue: ShortString, exchange: ShortString, routing_key: ShortString,
            arguments: FieldTable,
        }
        51 QueueUnbindOk "queue.unbind-ok" [Sync ToClient] -> [] {}
    }
    class 60 {
        10 BasicQos "basic.qos" [Sync ToServer] -> [BasicQosOk] {
            prefetch_size: u32, prefetch_count: u16, global: bool,
        }
        11 BasicQosOk "basic.qos-ok" [Sync ToClient] -> [] {}
        20 BasicConsume "basic.consume" [Sync ToServer] -> [BasicConsumeOk] {
            reserved_1: u16, queue: ShortString, consumer_tag: ShortString, no_local: bool,
            no_ack: bool, exclusive: bool, no_wait: bool, arguments: FieldTable,
        }
        21 BasicConsumeOk "basic.consume-ok" [Sync ToClient] -> [] { consumer_tag: ShortString }
        /// Sent by the client to end a consumer, or by RabbitMQ when the queue went away.
        30 BasicCancel "basic.cancel" [Sync ToClient ToServer] -> [BasicCancelOk] {
            consumer_tag: ShortString, no_wait: bool,
        }
        31 BasicCancelOk "basic.cancel-ok" [Sync ToClient ToServer] -> [] { consumer_tag: ShortString }
        40 BasicPublish "basic.publish" [Content ToServer] -> [] {
            reserved_1: u16, exchange: ShortString, routing_key: ShortString, mandatory: bool,
            immediate: bool,
        }
        50 BasicReturn "basic.return" [Content ToClient] -> [] {
            reply_code: u16, reply_text: ShortString, exchange: ShortString,
            routing_key: ShortString,
        }
        60 BasicDeliver "basic.deliver" [Content ToClient] -> [] {
            consumer_tag: ShortString, delivery_tag: u64, redelivered: bool,
            exchange: ShortString, routing_key: ShortString,
        }
        70 BasicGet "basic.get" [Sync ToServer] -> [BasicGetOk BasicGetEmpty] {
            reserved_1: u16, queue: ShortString, no_ack: bool,
        }
        71 BasicGetOk "basic.get-ok" [Sync Content ToClient] -> [] {
            delivery_tag: u64, redelivered: bool, exchange: ShortString, routing_key: ShortString,
            message_count: u32,
        }
        72 BasicGetEmpty "basic.get-empty" [Sync ToClient] -> [] { reserved_1: ShortString }
        /// Sent by the client to acknowledge deliveries, or by RabbitMQ to confirm publishes.
        80 BasicAck "basic.ack" [ToClient ToServer] -> [] { delivery_tag: u64, multiple: bool }
        90 BasicReject "basic.reject" [ToServer] -> [] { delivery_tag: u64, requeue: bool }
        100 BasicRecoverAsync "basic.recover-async" [ToServer] -> [] { requeue: bool }
        /// The XML marks it asynchronous, but RabbitMQ always answers with recover-ok.
        110 BasicRecover "basic.recover" [Sync ToServer] -> [BasicRecoverOk] { requeue: bool }
        111 BasicRecoverOk "basic.recover-ok" [Sync ToClient] -> [] {}
        /// RabbitMQ extension: negative acknowledgement, from the client or for confirms.
        120 BasicNack "basic.nack" [ToClient ToServer] -> [] {
            delivery_tag: u64, multiple: bool, requeue: bool,
        }
    }
    class 85 {
        /// RabbitMQ extension: publisher confirms.
        10 ConfirmSelect "confirm.select" [Sync ToServer] -> [ConfirmSelectOk] { nowait: bool }
        11 ConfirmSelectOk "confirm.select-ok" [Sync ToClient] -> [] {}
    }
    class 90 {
        10 TxSelect "tx.select" [Sync ToServer] -> [TxSelectOk] {}
        11 TxSelectOk "tx.select-ok" [Sync ToClient] -> [] {}
        20 TxCommit "tx.commit" [Sync ToServer] -> [TxCommitOk] {}
        21 TxCommitOk "tx.commit-ok" [Sync ToClient] -> [] {}
        30 TxRollback "tx.rollback" [Sync ToServer] -> [TxRollbackOk] {}
        31 TxRollbackOk "tx.rollback-ok" [Sync ToClient] -> [] {}
    }
}
