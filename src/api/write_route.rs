//! The `Write` call read straight off its HTTP/2 frames.
//!
//! tonic decodes a streaming request by copying every frame's bytes into
//! one buffer and cutting messages out of that: one user-space copy of
//! every byte written, the largest single cost of a `file://` write. Here
//! the gRPC framing (a flag byte and a 4-byte length before each message)
//! and the four fields of `WriteRequest` are read over the frames as h2
//! handed them over, and `data` stays the slices of those frames
//! ([`Rope`]): the bytes are first copied by the kernel, into the file.
//!
//! Everything else about the call is what tonic would do: the same size
//! limit and status codes, errors answered trailers-only (so the edge's
//! layers read them from the headers), and the messages applied as
//! before ([`GatewayApi::write_call`]). A call whose messages are compressed
//! (`grpc-encoding` other than `identity`) is left to tonic, which refuses
//! it (sluice accepts no compression).

use std::collections::VecDeque;
use std::convert::Infallible;
use std::task::{Context, Poll};

use bytes::{Buf, BufMut, Bytes, BytesMut};
use futures::future::BoxFuture;
use http::HeaderValue;
use http_body_util::BodyExt;
use prost::Message;
use tonic::Status;
use tonic::body::Body;
use tonic::metadata::MetadataMap;
use tonic::server::NamedService;

use super::{GatewayApi, WriteMessage};
use crate::backend::{Rope, take_front};
use crate::error::Error;
use crate::proto::WriteResponse;

/// The gRPC path of `StorageGateway.Write`.
const PATH: &str = "/sluice.v1.StorageGateway/Write";

/// A gRPC message's prefix: a compression flag and a big-endian length.
const PREFIX: usize = 5;

/// Frames shorter than this are copied together until they are this long,
/// rather than kept as slices of their own: a client sending 1-byte DATA
/// frames would otherwise make the server hold a 32-byte slice handle for
/// every byte of a message (512 MiB for one 16 MiB message). Clients send
/// 16 KiB frames (h2's default), which are kept as they are.
const KEEP_FROM: usize = 4 * 1024;

/// The API's routes with `Write` taken off tonic's decoder; every other
/// call goes to `inner` (the generated `StorageGatewayServer`).
#[derive(Clone)]
pub struct WriteRoute<S> {
    inner: S,
    api: GatewayApi,
    max_message_size: usize,
}

impl<S> WriteRoute<S> {
    /// `max_message_size`: as given to `inner` (`rpc.max-message-size`).
    pub fn new(inner: S, api: GatewayApi, max_message_size: usize) -> WriteRoute<S> {
        WriteRoute {
            inner,
            api,
            max_message_size,
        }
    }
}

impl<S: NamedService> NamedService for WriteRoute<S> {
    const NAME: &'static str = S::NAME;
}

impl<S> tower::Service<http::Request<Body>> for WriteRoute<S>
where
    S: tower::Service<http::Request<Body>, Response = http::Response<Body>, Error = Infallible>,
    S::Future: Send + 'static,
{
    type Response = http::Response<Body>;
    type Error = Infallible;
    type Future = BoxFuture<'static, Result<http::Response<Body>, Infallible>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<Body>) -> Self::Future {
        if request.uri().path() != PATH || compressed(request.headers()) {
            return Box::pin(self.inner.call(request));
        }
        let api = self.api.clone();
        let max = self.max_message_size;
        Box::pin(async move { Ok(api.serve_write(request, max).await) })
    }
}

/// Whether the call declares compressed messages.
fn compressed(headers: &http::HeaderMap) -> bool {
    headers
        .get("grpc-encoding")
        .is_some_and(|encoding| encoding != "identity")
}

impl GatewayApi {
    async fn serve_write(&self, request: http::Request<Body>, max: usize) -> http::Response<Body> {
        let (parts, body) = request.into_parts();
        let metadata = MetadataMap::from_headers(parts.headers);
        let result = match self.caller_of(&metadata) {
            Ok(caller) => self.write_call(caller, Frames::new(body, max)).await,
            Err(status) => Err(status),
        };
        match result {
            Ok(reply) => answer(&reply),
            Err(status) => status.into_http(),
        }
    }
}

/// A successful call's answer: one message, then `grpc-status: 0`.
fn answer(reply: &WriteResponse) -> http::Response<Body> {
    let len = reply.encoded_len();
    let mut message = BytesMut::with_capacity(PREFIX + len);
    message.put_u8(0);
    message.put_u32(len as u32);
    reply.encode_raw(&mut message);
    let mut trailers = http::HeaderMap::new();
    trailers.insert("grpc-status", HeaderValue::from_static("0"));
    let frames = futures::stream::iter([
        Ok::<_, Status>(http_body::Frame::data(message.freeze())),
        Ok(http_body::Frame::trailers(trailers)),
    ]);
    let mut response = http::Response::new(Body::new(http_body_util::StreamBody::new(frames)));
    response.headers_mut().insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("application/grpc"),
    );
    response
}

/// A Write call's messages, cut from the request's frames.
pub(super) struct Frames {
    body: Body,
    /// Frames received and not yet cut into messages: `held`, then the
    /// short frames gathered in `short`; `len` counts both.
    held: VecDeque<Bytes>,
    short: BytesMut,
    len: usize,
    ended: bool,
    max: usize,
}

impl Frames {
    fn new(body: Body, max: usize) -> Frames {
        Frames {
            body,
            held: VecDeque::new(),
            short: BytesMut::new(),
            len: 0,
            ended: false,
            max,
        }
    }

    pub(super) async fn next(&mut self) -> Result<Option<WriteMessage>, Status> {
        match self.message().await? {
            Some(message) => Ok(Some(decode(message)?)),
            None => Ok(None),
        }
    }

    /// The next message's bytes, without its prefix.
    async fn message(&mut self) -> Result<Option<Fields>, Status> {
        loop {
            if self.len >= PREFIX {
                if self.len - self.short.len() < PREFIX {
                    self.keep_short();
                }
                let mut prefix = [0u8; PREFIX];
                copy_front(&self.held, &mut prefix);
                let size =
                    u32::from_be_bytes([prefix[1], prefix[2], prefix[3], prefix[4]]) as usize;
                if prefix[0] != 0 {
                    return Err(Error::Undecodable(
                        "a message is flagged compressed, but the call declared no grpc-encoding"
                            .into(),
                    )
                    .into());
                }
                if size > self.max {
                    return Err(Error::MessageTooLarge(format!(
                        "a Write message of {size} bytes is over the limit of {} bytes",
                        self.max
                    ))
                    .into());
                }
                if self.len >= PREFIX + size {
                    self.keep_short();
                    take_front(&mut self.held, PREFIX);
                    let fields = take_front(&mut self.held, size);
                    self.len -= PREFIX + size;
                    return Ok(Some(Fields::new(fields, size)));
                }
            }
            if self.ended {
                if self.len == 0 {
                    return Ok(None);
                }
                return Err(Error::Undecodable(format!(
                    "the call ended inside a message, {} bytes into it",
                    self.len
                ))
                .into());
            }
            match self.body.frame().await {
                Some(Ok(frame)) => {
                    // Trailers, which a client has no reason to send, are
                    // ignored, as tonic ignores them.
                    if let Ok(data) = frame.into_data()
                        && !data.is_empty()
                    {
                        self.len += data.len();
                        if data.len() < KEEP_FROM {
                            self.short.extend_from_slice(&data);
                            if self.short.len() >= KEEP_FROM {
                                self.keep_short();
                            }
                        } else {
                            self.keep_short();
                            self.held.push_back(data);
                        }
                    }
                }
                // The connection broke, or the client reset the stream.
                Some(Err(status)) => return Err(status),
                None => self.ended = true,
            }
        }
    }
}

impl Frames {
    /// Moves the short frames gathered so far behind `held`, as one slice.
    fn keep_short(&mut self) {
        if !self.short.is_empty() {
            self.held.push_back(self.short.split().freeze());
        }
    }
}

/// Copies the first `out.len()` bytes of `queue`, which holds at least as
/// many.
fn copy_front(queue: &VecDeque<Bytes>, out: &mut [u8]) {
    let mut filled = 0;
    for chunk in queue {
        let n = chunk.len().min(out.len() - filled);
        out[filled..filled + n].copy_from_slice(&chunk[..n]);
        filled += n;
        if filled == out.len() {
            return;
        }
    }
}

/// A protobuf message's bytes, read front to back.
struct Fields {
    held: VecDeque<Bytes>,
    len: usize,
}

fn undecodable(what: &str) -> Error {
    Error::Undecodable(format!("sluice.v1.WriteRequest: {what}"))
}

impl Fields {
    fn new(mut slices: Vec<Bytes>, len: usize) -> Fields {
        slices.retain(|s| !s.is_empty());
        Fields {
            held: slices.into(),
            len,
        }
    }

    fn byte(&mut self) -> Result<u8, Error> {
        let front = self
            .held
            .front_mut()
            .ok_or_else(|| undecodable("a field is cut short"))?;
        let byte = front[0];
        front.advance(1);
        if front.is_empty() {
            self.held.pop_front();
        }
        self.len -= 1;
        Ok(byte)
    }

    /// A base-128 varint of at most 10 bytes, as protobuf writes them.
    fn varint(&mut self) -> Result<u64, Error> {
        let mut value = 0u64;
        for i in 0..10 {
            let byte = self.byte()?;
            if i == 9 && byte > 1 {
                break;
            }
            value |= u64::from(byte & 0x7f) << (7 * i);
            if byte < 0x80 {
                return Ok(value);
            }
        }
        Err(undecodable("a varint overflows 64 bits"))
    }

    /// The next `n` bytes as the slices they lie in.
    fn take(&mut self, n: u64) -> Result<Vec<Bytes>, Error> {
        match usize::try_from(n) {
            Ok(n) if n <= self.len => {
                self.len -= n;
                Ok(take_front(&mut self.held, n))
            }
            _ => Err(undecodable("a field is longer than the message")),
        }
    }

    /// A length-delimited field's bytes.
    fn delimited(&mut self) -> Result<Vec<Bytes>, Error> {
        let n = self.varint()?;
        self.take(n)
    }
}

/// Wire types of protobuf's encoding.
const VARINT: u64 = 0;
const FIXED64: u64 = 1;
const DELIMITED: u64 = 2;
const FIXED32: u64 = 5;

/// `WriteRequest`'s fields (`proto/sluice/v1/gateway.proto`); unknown
/// fields are skipped, and a field given twice keeps its last value, as
/// prost decodes it.
fn decode(mut fields: Fields) -> Result<WriteMessage, Error> {
    let mut message = WriteMessage::default();
    while fields.len > 0 {
        let key = fields.varint()?;
        let (number, wire) = (key >> 3, key & 7);
        if number == 0 || number > u64::from(u32::MAX >> 3) {
            return Err(undecodable(&format!("field number {number} is invalid")));
        }
        match (number, wire) {
            (1, DELIMITED) => {
                let text = Rope::from(fields.delimited()?).into_bytes();
                message.session_id = String::from_utf8(text.to_vec())
                    .map_err(|_| undecodable("session_id is not UTF-8"))?;
            }
            (2, VARINT) => message.offset = fields.varint()?,
            (3, DELIMITED) => message.data = Rope::from(fields.delimited()?),
            // A uint32 is a varint truncated to 32 bits.
            (4, VARINT) => message.crc32c = Some(fields.varint()? as u32),
            (1..=4, _) => {
                return Err(undecodable(&format!(
                    "field {number} has wire type {wire}, not its own"
                )));
            }
            (_, VARINT) => {
                fields.varint()?;
            }
            (_, FIXED64) => {
                fields.take(8)?;
            }
            (_, DELIMITED) => {
                fields.delimited()?;
            }
            (_, FIXED32) => {
                fields.take(4)?;
            }
            (_, _) => {
                return Err(undecodable(&format!(
                    "field {number} has wire type {wire}, which sluice does not take"
                )));
            }
        }
    }
    Ok(message)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::WriteRequest;

    /// `bytes` cut into slices at `cuts` (offsets, ascending).
    fn sliced(bytes: &[u8], cuts: &[usize]) -> Vec<Bytes> {
        let mut out = Vec::new();
        let mut start = 0;
        for &cut in cuts.iter().chain(std::iter::once(&bytes.len())) {
            out.push(Bytes::copy_from_slice(&bytes[start..cut]));
            start = cut;
        }
        out
    }

    fn decoded(bytes: &[u8], cuts: &[usize]) -> Result<WriteMessage, Error> {
        decode(Fields::new(sliced(bytes, cuts), bytes.len()))
    }

    fn request() -> WriteRequest {
        WriteRequest {
            session_id: "s-1é".into(),
            offset: u64::MAX - 3,
            data: (0..300u32).map(|i| i as u8).collect::<Vec<u8>>().into(),
            crc32c: Some(0xdead_beef),
        }
    }

    #[test]
    fn decodes_what_prost_encodes_however_it_is_sliced() {
        let sent = request();
        let bytes = sent.encode_to_vec();
        for a in 0..bytes.len() {
            for b in [a, a + 1, a + 7, bytes.len()] {
                let cuts: Vec<usize> = [a, b.min(bytes.len())].into();
                let got = decoded(&bytes, &cuts).unwrap();
                assert_eq!(got.session_id, sent.session_id);
                assert_eq!(got.offset, sent.offset);
                assert_eq!(got.data.clone().into_bytes(), sent.data);
                assert_eq!(got.crc32c, sent.crc32c);
            }
        }
        // Defaults, and a CRC32C of zero that is still sent.
        let empty = WriteRequest {
            crc32c: Some(0),
            ..Default::default()
        };
        let got = decoded(&empty.encode_to_vec(), &[]).unwrap();
        assert_eq!((got.offset, got.crc32c), (0, Some(0)));
        assert!(got.data.is_empty() && got.session_id.is_empty());
    }

    /// `decode` knows `WriteRequest`'s fields by number: a field added to
    /// the proto must be taught to it, or this route would skip it as
    /// unknown.
    #[test]
    fn knows_every_field_of_the_proto() {
        use prost_types::field_descriptor_proto::Type;
        let set =
            prost_types::FileDescriptorSet::decode(crate::proto::FILE_DESCRIPTOR_SET).unwrap();
        let message = set
            .file
            .iter()
            .filter(|f| f.package() == "sluice.v1")
            .flat_map(|f| &f.message_type)
            .find(|m| m.name() == "WriteRequest")
            .expect("sluice.v1.WriteRequest");
        let fields: Vec<(i32, Type)> = message
            .field
            .iter()
            .map(|f| (f.number(), f.r#type()))
            .collect();
        assert_eq!(
            fields,
            [
                (1, Type::String),
                (2, Type::Uint64),
                (3, Type::Bytes),
                (4, Type::Uint32)
            ],
            "WriteRequest changed: teach `decode` in write_route.rs its fields"
        );
    }

    #[test]
    fn data_stays_in_the_slices_it_came_in() {
        let bytes = request().encode_to_vec();
        let slices = sliced(&bytes, &[100, 200]);
        let starts: Vec<*const u8> = slices.iter().map(|s| s.as_ptr()).collect();
        let got = decode(Fields::new(slices, bytes.len())).unwrap();
        let chunks = got.data.chunks();
        assert_eq!(chunks.len(), 3);
        assert_eq!(chunks[1].as_ptr(), starts[1], "no copy of the middle slice");
    }

    #[test]
    fn skips_unknown_fields_and_keeps_the_last_of_a_repeated_one() {
        let mut bytes = Vec::new();
        bytes.extend_from_slice(&[0x10, 0x05]); // offset = 5
        bytes.extend_from_slice(&[0x28, 0x96, 0x01]); // field 5, varint
        bytes.extend_from_slice(&[0x31, 1, 2, 3, 4, 5, 6, 7, 8]); // field 6, fixed64
        bytes.extend_from_slice(&[0x3a, 0x02, b'x', b'y']); // field 7, bytes
        bytes.extend_from_slice(&[0x45, 1, 2, 3, 4]); // field 8, fixed32
        bytes.extend_from_slice(&[0x10, 0x07]); // offset = 7
        bytes.extend_from_slice(&[0x20, 0xff, 0xff, 0xff, 0xff, 0x1f]); // crc32c: 2^35 - 1
        let got = decoded(&bytes, &[3, 4]).unwrap();
        assert_eq!(got.offset, 7);
        assert_eq!(
            got.crc32c,
            Some(u32::MAX),
            "truncated to 32 bits, as prost does"
        );
    }

    #[test]
    fn refuses_what_prost_refuses() {
        let bytes = request().encode_to_vec();
        for cut in 1..bytes.len() {
            let short = &bytes[..cut];
            // Some prefixes end between fields: those decode.
            if let Err(err) = decoded(short, &[]) {
                assert!(matches!(err, Error::Undecodable(_)), "{err}");
            }
            assert_eq!(
                decoded(short, &[]).is_ok(),
                WriteRequest::decode(short).is_ok(),
                "{cut} of {} bytes",
                bytes.len()
            );
        }
        for bad in [
            &[0x0a, 0x02, 0xff, 0xfe][..], // session_id not UTF-8
            &[0x12, 0x00],                 // offset as bytes
            &[0x00, 0x00],                 // field 0
            &[0x2b],                       // field 5, start group
            &[
                0x10, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f,
            ], // 11-byte varint
        ] {
            assert!(decoded(bad, &[]).is_err(), "{bad:?}");
            assert!(WriteRequest::decode(bad).is_err(), "prost takes {bad:?}");
        }
    }

    /// A request body of `frames`.
    fn body(frames: Vec<Bytes>) -> Body {
        let frames = frames
            .into_iter()
            .map(|f| Ok::<_, Status>(http_body::Frame::data(f)));
        Body::new(http_body_util::StreamBody::new(futures::stream::iter(
            frames,
        )))
    }

    fn framed(messages: &[WriteRequest]) -> Vec<u8> {
        let mut out = Vec::new();
        for m in messages {
            let bytes = m.encode_to_vec();
            out.push(0);
            out.extend_from_slice(&(bytes.len() as u32).to_be_bytes());
            out.extend_from_slice(&bytes);
        }
        out
    }

    #[tokio::test]
    async fn cuts_messages_from_frames_split_anywhere() {
        let sent = vec![request(), WriteRequest::default(), request()];
        let stream = framed(&sent);
        for step in [1, 2, 5, 7, 64, stream.len()] {
            let cuts: Vec<usize> = (step..stream.len()).step_by(step).collect();
            let mut frames = Frames::new(body(sliced(&stream, &cuts)), 1 << 20);
            for m in &sent {
                let got = frames.next().await.unwrap().expect("a message");
                assert_eq!(got.data.into_bytes(), m.data, "step {step}");
                assert_eq!(got.session_id, m.session_id);
            }
            assert!(frames.next().await.unwrap().is_none());
        }
    }

    #[tokio::test]
    async fn short_frames_are_gathered_not_held_one_by_one() {
        let sent = WriteRequest {
            data: vec![9u8; 64 * 1024].into(),
            ..request()
        };
        let stream = framed(std::slice::from_ref(&sent));
        let one_byte_frames: Vec<usize> = (1..stream.len()).collect();
        let mut frames = Frames::new(body(sliced(&stream, &one_byte_frames)), 1 << 20);
        let got = frames.next().await.unwrap().expect("a message");
        // 64 KiB in slices of at least 4 KiB, and the two ends.
        assert!(
            got.data.chunks().len() <= 18,
            "{} slices for 64 KiB sent in 1-byte frames",
            got.data.chunks().len()
        );
        assert_eq!(got.data.into_bytes(), sent.data);
        assert_eq!(got.session_id, sent.session_id);
        assert!(frames.next().await.unwrap().is_none());
    }

    #[tokio::test]
    async fn refuses_oversized_compressed_and_cut_off_messages() {
        let one = framed(&[request()]);
        let code = |r: Result<Option<WriteMessage>, Status>| r.unwrap_err().code();

        let mut small = Frames::new(body(vec![Bytes::from(one.clone())]), 10);
        let err = small.next().await.unwrap_err();
        assert_eq!(err.code(), tonic::Code::ResourceExhausted);
        assert!(err.message().contains("rpc.max-message-size"), "{err:?}");

        let mut flagged = one.clone();
        flagged[0] = 1;
        let mut frames = Frames::new(body(vec![Bytes::from(flagged)]), 1 << 20);
        assert_eq!(code(frames.next().await), tonic::Code::InvalidArgument);

        let cut = Bytes::copy_from_slice(&one[..one.len() - 1]);
        let mut frames = Frames::new(body(vec![cut]), 1 << 20);
        assert_eq!(code(frames.next().await), tonic::Code::InvalidArgument);

        let mut frames = Frames::new(body(vec![Bytes::from_static(&[0, 0])]), 1 << 20);
        assert_eq!(code(frames.next().await), tonic::Code::InvalidArgument);
    }
}
