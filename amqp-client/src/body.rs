//! What `basic_publish` accepts as a message body.

use bytes::Bytes;

/// A message body for `basic_publish`: owned buffers are taken without copying (`Bytes`,
/// `Vec<u8>`, `String`, `Box<[u8]>`), `&Bytes` is shared (a reference count, no copy), and
/// borrowed bytes or text (`&[u8]`, `&str`, `&Vec<u8>`, `&String`, `&[u8; N]`) are copied once
/// into a new buffer, because the body must outlive the call until it is written.
///
/// ```
/// use amqp_client::IntoBody;
/// let line = String::from("hello");
/// assert_eq!(line.as_bytes().into_body(), "hello".into_body());
/// assert_eq!(bytes::Bytes::from_static(b"x").into_body().len(), 1);
/// ```
pub trait IntoBody {
    /// The body as `Bytes`.
    fn into_body(self) -> Bytes;
}

macro_rules! owned {
    ($($t:ty),*) => {$(
        impl IntoBody for $t {
            fn into_body(self) -> Bytes {
                Bytes::from(self)
            }
        }
    )*};
}
owned!(Bytes, Vec<u8>, String, Box<[u8]>);

impl IntoBody for &Bytes {
    fn into_body(self) -> Bytes {
        self.clone()
    }
}

macro_rules! copied {
    ($($t:ty),*) => {$(
        impl IntoBody for $t {
            fn into_body(self) -> Bytes {
                Bytes::copy_from_slice(self.as_ref())
            }
        }
    )*};
}
copied!(&[u8], &str, &Vec<u8>, &String);

impl<const N: usize> IntoBody for &[u8; N] {
    fn into_body(self) -> Bytes {
        Bytes::copy_from_slice(self)
    }
}
