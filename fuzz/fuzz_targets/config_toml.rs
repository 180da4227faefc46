//! Config files written by operators: any text is a config or an error naming the key or line,
//! never a panic; and a config once accepted reads back the same from its own serialized form
//! (what `gateway config` prints and the defaults are merged from).
#![no_main]
use gateway::config::Config;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(config) = Config::from_toml_str(text) else {
        return;
    };
    let again: Config = figment::Figment::from(figment::providers::Serialized::defaults(&config))
        .extract()
        .expect("an accepted config reads back from its own serialized form");
    assert_eq!(format!("{config:?}"), format!("{again:?}"));
});
