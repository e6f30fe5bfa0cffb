//! Shared parts of the fuzz targets: allocation counting (`allocation-counter`'s allocator),
//! so each can assert that a decoder stays within its allocation bound, and the codec driver
//! for the request-response message types.

use std::{fmt::Debug, io};

use futures::{executor::block_on, io::Cursor};
use libp2p::{
    request_response::{cbor::codec::Codec as CborCodec, Codec},
    StreamProtocol,
};
use serde::{de::DeserializeOwned, Serialize};

/// The directory manifest decoder of the `iwant` crate, compiled here on its own: it needs
/// only `blake3` and `thiserror`, and the whole node would be a much larger build.
#[path = "../../src/share/manifest.rs"]
#[allow(dead_code)]
pub mod manifest;

// ---------------------------------------------------------------------------------------------
// Allocations are counted by `allocation-counter`, whose allocator every target runs under.

/// Runs `f`; returns its result and the most bytes it had allocated at once beyond what was
/// live before.
pub fn measure<R>(f: impl FnOnce() -> R) -> (R, usize) {
    let mut result = None;
    let info = allocation_counter::measure(|| result = Some(f()));
    (
        result.expect("bug: measured code ran"),
        info.bytes_max as usize,
    )
}

/// Asserts that `f` allocates at most `bound` bytes at once.
pub fn bounded<R>(what: &str, input_len: usize, bound: usize, f: impl FnOnce() -> R) -> R {
    let (r, peak) = measure(f);
    assert!(
        peak <= bound,
        "{what}: {input_len} input bytes made the decoder allocate {peak} bytes at once, more than {bound}"
    );
    r
}

// ---------------------------------------------------------------------------------------------
// Request-response messages through libp2p's CBOR codec, as the network path reads them.

/// Which half of a request-response exchange a type is.
#[derive(Clone, Copy)]
pub enum Side {
    Request,
    Response,
}

/// The allocation bound for one message under a codec limit of `limit` bytes: the codec's
/// buffer (a doubling vector: up to 3x the limit while it grows, counted as old and new
/// block), the copies the value keeps (1x), and 256 KiB for the capped vectors and errors.
pub fn cbor_bound(limit: u64) -> usize {
    4 * limit as usize + (256 << 10)
}

/// Reads `data` as one message of `Req`/`Resp` with the codec caps of the protocol; asserts the
/// allocation bound; for a value that passes `check`, asserts that it re-encodes to a message
/// that decodes to itself.
#[allow(clippy::too_many_arguments)] // called only through `cbor_target!`
pub fn cbor_message<Req, Resp, T>(
    side: Side,
    protocol: StreamProtocol,
    max_request: u64,
    max_response: u64,
    data: &[u8],
    get: fn(Result<Req, Resp>) -> T,
    put: fn(T) -> Result<Req, Resp>,
    check: fn(&T) -> Result<(), String>,
) where
    Req: Serialize + DeserializeOwned + Send + Clone + Debug,
    Resp: Serialize + DeserializeOwned + Send + Clone + Debug,
    T: PartialEq + Debug + Clone,
{
    let codec = || {
        CborCodec::<Req, Resp>::default()
            .set_request_size_maximum(max_request)
            .set_response_size_maximum(max_response)
    };
    let read = |bytes: &[u8]| -> io::Result<T> {
        let mut io = Cursor::new(bytes);
        let mut c = codec();
        Ok(match side {
            Side::Request => get(Ok(block_on(c.read_request(&protocol, &mut io))?)),
            Side::Response => get(Err(block_on(c.read_response(&protocol, &mut io))?)),
        })
    };
    let limit = match side {
        Side::Request => max_request,
        Side::Response => max_response,
    };
    let Ok(value) = bounded("cbor message", data.len(), cbor_bound(limit), || read(data)) else {
        return;
    };
    if check(&value).is_err() {
        return;
    }
    let mut out = Cursor::new(Vec::new());
    let mut c = codec();
    match put(value.clone()) {
        Ok(req) => block_on(c.write_request(&protocol, &mut out, req)),
        Err(resp) => block_on(c.write_response(&protocol, &mut out, resp)),
    }
    .expect("a decoded value encodes");
    let again = read(&out.into_inner()).expect("a checked value re-decodes");
    assert_eq!(again, value, "re-encoding changed the value");
}

/// Defines a fuzz target for the request (`Req`) or response (`Resp`) of a protocol module of
/// `iwant_behaviours`.
#[macro_export]
macro_rules! cbor_target {
    (request: $req:ty, $resp:ty, $proto:expr, $max_req:expr, $max_resp:expr, $check:expr) => {
        libfuzzer_sys::fuzz_target!(|data: &[u8]| {
            fn get(r: Result<$req, $resp>) -> $req {
                r.ok().expect("a request")
            }
            iwant_fuzz::cbor_message::<$req, $resp, $req>(
                iwant_fuzz::Side::Request,
                $proto,
                $max_req,
                $max_resp,
                data,
                get,
                Ok,
                $check,
            );
        });
    };
    (response: $req:ty, $resp:ty, $proto:expr, $max_req:expr, $max_resp:expr, $check:expr) => {
        libfuzzer_sys::fuzz_target!(|data: &[u8]| {
            fn get(r: Result<$req, $resp>) -> $resp {
                r.err().expect("a response")
            }
            iwant_fuzz::cbor_message::<$req, $resp, $resp>(
                iwant_fuzz::Side::Response,
                $proto,
                $max_req,
                $max_resp,
                data,
                get,
                Err,
                $check,
            );
        });
    };
}
