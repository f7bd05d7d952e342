//! The configuration loader on arbitrary text: it must return a configuration that passes its
//! own validation, or an error — never panic — and an accepted configuration must produce EAL
//! arguments that name both ports.
#![no_main]

use levee_control::config::Config;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    if let Ok(cfg) = Config::from_toml(text) {
        assert!(cfg.validate().is_ok());
        let args = cfg.eal_args();
        assert!(args.iter().any(|a| a == "-l"));
        assert!(!cfg.workers.cores.contains(&cfg.eal.main_core));
    }
});
