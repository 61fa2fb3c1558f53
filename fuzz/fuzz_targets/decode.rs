//! Decode alone on arbitrary bytes: never panics, and what it reports lies
//! inside the frame.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sluice_dataplane::decode::{decode, Decoded};

fuzz_target!(|data: &[u8]| {
    if let Ok(Decoded::Ip(p)) = decode(data) {
        assert!(
            p.l3 <= p.l4 && p.l4 <= p.end && p.end as usize <= data.len(),
            "{p:?}"
        );
    }
});
