//! `/iwant/peers/1.0.0` requests (`Announce`) through the CBOR codec, then `parse`.
#![no_main]
use iwant_behaviours::peer_exchange::{self as p, Ack, Announce};

iwant_fuzz::cbor_target!(request: Announce, Ack, p::PROTOCOL, p::MAX_MESSAGE, p::MAX_MESSAGE,
    |a: &Announce| a.parse().map(|_| ()));
