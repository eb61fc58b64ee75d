//! Any chat text a client can post: validation and the word filter never panic, a message that
//! passes is 1–500 characters, and masking keeps its length in characters.
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use roomcast_chat::WordFilter;
use roomcast_chat::message::{MAX_TEXT_CHARS, validate_text};

fuzz_target!(|data: &[u8]| {
    static FILTER: OnceLock<WordFilter> = OnceLock::new();
    let filter = FILTER.get_or_init(|| WordFilter::from_words(["darn", "heck", "ünïcode wörd", "a"]));
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(valid) = validate_text(text) else {
        return;
    };
    let chars = valid.chars().count();
    assert!((1..=MAX_TEXT_CHARS).contains(&chars));
    assert_eq!(filter.mask(&valid).chars().count(), chars);
});
