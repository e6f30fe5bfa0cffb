//! `/iwant/chunk/1` requests, as a server reads them: request after request from one stream.
#![no_main]
use futures::{executor::block_on, io::Cursor};
use iwant_behaviours::chunk;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let mut io = Cursor::new(data);
    iwant_fuzz::bounded("chunk requests", data.len(), 4096, || loop {
        let before = io.position();
        match block_on(chunk::read_request(&mut io)) {
            Ok(Some(r)) => {
                assert!((1..=chunk::MAX_PIECES_PER_REQUEST).contains(&r.count));
                assert!(r.first.checked_add(r.count).is_some());
                assert_eq!(io.position() - before, chunk::REQUEST_LEN as u64);
                let mut out = Vec::new();
                block_on(chunk::write_request(&mut out, &r)).expect("a valid request is written");
                assert_eq!(&out[..], &data[before as usize..io.position() as usize]);
            }
            Ok(None) => {
                assert_eq!(before, data.len() as u64);
                break;
            }
            Err(_) => break,
        }
    });
});
