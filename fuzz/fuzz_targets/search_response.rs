//! `/iwant/search/1.0.0` responses through the CBOR codec.
#![no_main]
use iwant_behaviours::search::{self as p, Request, Response};

iwant_fuzz::cbor_target!(response: Request, Response, p::PROTOCOL, p::MAX_REQUEST, p::MAX_RESPONSE,
    |_: &Response| Ok(()));
