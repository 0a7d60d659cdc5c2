//! Any bytes as a config file: an error naming a key, or a config; never a panic.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        let env = |_: &str| None;
        if let Ok(c) = canary_proxy::config::Config::from_toml_str(text, "fuzz.toml", std::path::Path::new("/nonexistent"), &env) {
            let _ = c.render_masked();
        }
    }
});
