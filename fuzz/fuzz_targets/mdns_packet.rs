//! mDNS datagrams (at most 9,000 bytes, as the node reads them) through the decoder.
#![no_main]
use iwant_behaviours::mdns::{self, Packet};

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let data = &data[..data.len().min(9000)];
    // hickory-proto holds every record of the datagram while it reads it: names and strings
    // of a few bytes each, about a hundred bytes of bookkeeping per record.
    iwant_fuzz::bounded("mDNS datagram", data.len(), 1 << 20, || {
        if let Some(Packet::Response(peers)) = mdns::decode(data) {
            assert!(peers.len() <= 16);
            assert!(peers.iter().all(|p| p.addrs.len() <= 8));
        }
    });
});
