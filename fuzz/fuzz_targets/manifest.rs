//! Directory manifests (`src/share/manifest.rs`), as a downloader decodes one whose hash
//! matched: only canonical manifests decode, so what decodes re-encodes to the input.
#![no_main]
use iwant_fuzz::manifest;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    // A small entry limit sometimes, so that limit is exercised too.
    let max = if data.len().is_multiple_of(7) { 3 } else { usize::MAX };
    let decoded = iwant_fuzz::bounded("manifest", data.len(), 4 * data.len() + 4096, || {
        manifest::decode(data, max)
    });
    if let Ok(mut entries) = decoded {
        assert!(entries.len() <= max);
        assert_eq!(manifest::encode(&mut entries), data);
    }
});
