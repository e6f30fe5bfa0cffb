//! `/iwant/search/1.0.0` requests through the CBOR codec, then `Request::check`.
#![no_main]
use iwant_behaviours::search::{self as p, Request, Response};

iwant_fuzz::cbor_target!(request: Request, Response, p::PROTOCOL, p::MAX_REQUEST, p::MAX_RESPONSE,
    Request::check);
