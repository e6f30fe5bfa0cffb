//! `/iwant/peers/1.0.0` responses (`Ack`) through the CBOR codec.
#![no_main]
use iwant_behaviours::peer_exchange::{self as p, Ack, Announce};

iwant_fuzz::cbor_target!(response: Announce, Ack, p::PROTOCOL, p::MAX_MESSAGE, p::MAX_MESSAGE,
    |_: &Ack| Ok(()));
