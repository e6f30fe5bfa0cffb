//! `/iwant/content/1.0.0` responses through the CBOR codec, then `Response::check`.
#![no_main]
use iwant_behaviours::content::{self as p, Request, Response};

iwant_fuzz::cbor_target!(response: Request, Response, p::PROTOCOL, p::MAX_REQUEST, p::MAX_RESPONSE,
    Response::check);
