//! `sluice-cni`, the CNI plugin: see the library's docs.

use std::io::Read;

fn main() {
    let env = sluice_cni::conf::Env::from_process();
    let mut stdin = String::new();
    // VERSION may come with an empty stdin; the others need a config.
    let _ = std::io::stdin().read_to_string(&mut stdin);
    let out = sluice_cni::command::run(&env, &stdin);
    if !out.stdout.is_empty() {
        println!("{}", out.stdout);
    }
    std::process::exit(out.status);
}
