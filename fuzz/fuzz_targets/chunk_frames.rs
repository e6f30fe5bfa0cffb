//! `/iwant/chunk/1` response frames, as a client reads them: header after header, each `ok`
//! frame's data read when its length is the one the client expects. The first two bytes of
//! the input choose that expected length (as a client takes it from the checked piece list).
#![no_main]
use futures::{executor::block_on, io::Cursor};
use iwant_behaviours::chunk::{self, Status};

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let Some((expected, frames)) = data.split_first_chunk::<2>() else {
        return;
    };
    let expected = u32::from(u16::from_le_bytes(*expected));
    let mut io = Cursor::new(frames);
    let mut buf = Vec::new();
    iwant_fuzz::bounded("chunk frames", data.len(), expected as usize + 4096, || {
        while let Ok(h) = block_on(chunk::read_header(&mut io)) {
            assert!(h.len <= chunk::MAX_PIECE_LEN);
            assert!(h.status == Status::Ok || h.len == 0);
            let before = io.position();
            match block_on(chunk::read_piece(&mut io, &h, expected, &mut buf)) {
                Ok(()) => assert_eq!(buf.len(), expected as usize),
                Err(_) => {
                    if h.status != Status::Ok || h.len != expected {
                        assert_eq!(io.position(), before, "a refused piece reads nothing");
                    }
                    break;
                }
            }
        }
    });
});
