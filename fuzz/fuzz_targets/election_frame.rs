//! `/iwant/election/1` frames, frame after frame from one stream.
#![no_main]
use futures::{executor::block_on, io::Cursor};
use iwant_behaviours::election::protocol;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let mut io = Cursor::new(data);
    // cbor4ii reserves up to 16 KiB for a claimed string before it sees the frame is shorter.
    iwant_fuzz::bounded("election frames", data.len(), 20 << 10, || loop {
        let start = io.position() as usize;
        match block_on(protocol::recv(&mut io)) {
            Ok((_, message)) => {
                let n = data[start] as usize;
                assert!((1..=protocol::MAX_MESSAGE_SIZE).contains(&n));
                let again = protocol::Message::decode(&message.encode().unwrap()).unwrap();
                assert_eq!(again, message);
            }
            Err(_) => break,
        }
    });
});
